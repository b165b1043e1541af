//! The wallboard: a page for a wall TV, served on the HTTP port, with the
//! live figures of every queue pushed to it as they change.
//!
//! | path | auth | what |
//! |---|---|---|
//! | `GET /wallboard` | | redirects to `/wallboard/`, keeping the query |
//! | `GET /wallboard/` | reader | the page (HTML; CSS and JS beside it, all embedded in the binary) |
//! | `GET /wallboard/wallboard.css`, `/wallboard/wallboard.js` | | the page's style and script (no data) |
//! | `GET /wallboard/api/live` | reader | the figures now, as JSON ([`Board`]) |
//! | `GET /wallboard/events` | reader | Server-Sent Events: one `board` event (the same JSON) per change |
//!
//! Query parameters (all optional): `token` (a reader token, for screens
//! that cannot send headers), `tz` (the IANA zone whose midnight starts
//! "today"; default `[live].time_zone`), `queues` (comma-separated names;
//! default all). The page passes its own parameters on to the JSON and the
//! event stream, so a TV only needs one URL.
//!
//! # Access
//! With `[[readers]]` configured, every route marked "reader" needs a
//! reader token, exactly as the gRPC `Reports` service does, either as
//! `Authorization: Bearer <token>` or as `?token=<token>`; anything else is
//! 401. Without readers the wallboard is open to whoever reaches the HTTP
//! port (loopback by default). A token in a URL ends up in browser history
//! and proxy logs: give wall screens their own reader token.
//!
//! # Figures
//! Every board is built from [`KpiFollower::live`], the function behind
//! `WatchKpis`, with the same "now" (the aggregator's wall clock), so the
//! wallboard, `callkpi watch` and `GetKpis` over today agree. Offices that
//! are behind come from the same delivery watermarks as report completeness
//! and `ListAgents`; configured agents that never delivered anything are
//! listed too.
//!
//! # Pushing
//! One producer task per distinct view (time zone and queue filter), shared
//! by every screen showing it: it recomputes after each ingested batch and
//! every `push_interval_ms`, and publishes a board when a figure changed or
//! 15 s have passed (so a screen can tell a quiet centre from a dead link).
//! The task ends when its last screen goes away, or at shutdown, which also
//! ends the event streams.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use callkpi_proto::pb;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;

use crate::auth::ReaderAuth;
use crate::config::{LiveConfig, WallboardConfig};
use crate::reports::KpiFollower;
use crate::store::Store;

const INDEX_HTML: &str = include_str!("wallboard/index.html");
const STYLE_CSS: &str = include_str!("wallboard/wallboard.css");
const SCRIPT_JS: &str = include_str!("wallboard/wallboard.js");

/// An unchanged board is pushed again after this long.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// Distinct views (zone x queue filter) served at once.
const MAX_VIEWS: usize = 64;
/// Queue names in one view's filter.
const MAX_VIEW_QUEUES: usize = 100;

/// Only the page's own origin; no inline code, nothing external.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

// === the board ===

/// Everything a screen shows, as sent by `/wallboard/api/live` and the
/// event stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Board {
    /// When it was computed, Unix ns (aggregator clock).
    at_ns: i64,
    /// That instant in `time_zone`: `YYYY-MM-DD`.
    date: String,
    /// That instant in `time_zone`: `HH:MM`.
    time: String,
    /// The zone that defines "today".
    time_zone: String,
    /// `[wallboard].title`.
    title: String,
    /// Service-level thresholds, seconds; the first is the headline one.
    sl_thresholds_s: Vec<u32>,
    /// Colour thresholds, percent.
    colours: Colours,
    /// One per queue, by name.
    queues: Vec<QueueBoard>,
    /// Offices whose data is not all in.
    behind: Vec<Behind>,
    /// Names in `?queues=` that match no queue today (any case matches).
    unknown_queues: Vec<String>,
}

/// `[wallboard]` colour thresholds, echoed so the page can say what they are.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Colours {
    sl_green_pct: u8,
    sl_amber_pct: u8,
    abandon_amber_pct: u8,
    abandon_red_pct: u8,
}

/// One queue on the board.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct QueueBoard {
    queue: String,
    calls_waiting: u32,
    longest_wait_s: f64,
    /// Today's service level at the headline threshold; `None` while nothing was offered.
    service_level_today_pct: Option<f64>,
    /// `green`, `amber`, `red`, or `none` (nothing offered yet).
    service_level_status: &'static str,
    /// Today's service level at every threshold, by threshold in seconds.
    service_levels_today_pct: BTreeMap<String, f64>,
    abandonment_today_pct: Option<f64>,
    /// `green`, `amber`, `red`, or `none`.
    abandonment_status: &'static str,
    offered_today: u64,
    answered_today: u64,
    agents_available: u32,
    agents_busy: u32,
    agents_paused: u32,
    agents_wrapup: u32,
}

/// An office (agent) that is behind.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Behind {
    agent_id: String,
    site: Option<String>,
    /// How far behind now its delivered data is, s; `None` when it never delivered.
    lag_s: Option<f64>,
    never_delivered: bool,
}

impl Board {
    /// Same figures, whatever the instant they were computed at.
    fn same_figures(&self, other: &Self) -> bool {
        Self { at_ns: other.at_ns, ..self.clone() } == *other
    }
}

/// Colour of a service level: at or above green is green, at or above amber is amber.
fn sl_status(pct: Option<f64>, c: &WallboardConfig) -> &'static str {
    match pct {
        None => "none",
        Some(v) if v >= f64::from(c.sl_green_pct) => "green",
        Some(v) if v >= f64::from(c.sl_amber_pct) => "amber",
        Some(_) => "red",
    }
}

/// Colour of an abandonment rate: at or above red is red, at or above amber is amber.
fn abandon_status(pct: Option<f64>, c: &WallboardConfig) -> &'static str {
    match pct {
        None => "none",
        Some(v) if v >= f64::from(c.abandon_red_pct) => "red",
        Some(v) if v >= f64::from(c.abandon_amber_pct) => "amber",
        Some(_) => "green",
    }
}

// === views ===

/// What a screen asks to see: the zone of "today" and a queue filter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct View {
    time_zone: String,
    /// Sorted, distinct; empty = all.
    queues: Vec<String>,
}

/// Query parameters of every wallboard route. Unknown ones are ignored (a
/// screen may add a cache-buster).
#[derive(Debug, Default, Deserialize)]
struct Params {
    token: Option<String>,
    tz: Option<String>,
    queues: Option<String>,
}

// === the service ===

/// The wallboard's state: where figures come from, who may see them, and
/// the producers of the views being watched.
pub(crate) struct Wallboard {
    follower: Arc<KpiFollower>,
    store: Store,
    /// `None`: no `[[readers]]`, the wallboard is open.
    readers: Option<ReaderAuth>,
    live: LiveConfig,
    cfg: WallboardConfig,
    /// Configured agents and their configured site.
    agents: Vec<(String, Option<String>)>,
    feeds: Mutex<HashMap<View, watch::Sender<Option<Arc<str>>>>>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Wallboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wallboard").field("enabled", &self.cfg.enabled).finish_non_exhaustive()
    }
}

impl Wallboard {
    pub(crate) fn new(
        follower: Arc<KpiFollower>,
        store: Store,
        readers: Option<ReaderAuth>,
        live: LiveConfig,
        cfg: WallboardConfig,
        agents: Vec<(String, Option<String>)>,
        shutdown: CancellationToken,
    ) -> Self {
        Self { follower, store, readers, live, cfg, agents, feeds: Mutex::new(HashMap::new()), shutdown }
    }

    /// The KPI follower the boards are built from.
    pub(crate) fn follower(&self) -> &Arc<KpiFollower> {
        &self.follower
    }

    /// Whether the routes are served.
    pub(crate) fn enabled(&self) -> bool {
        self.cfg.enabled
    }

    /// Whether the routes need a reader token.
    pub(crate) fn protected(&self) -> bool {
        self.readers.is_some()
    }

    /// A live query of every queue for `time_zone`, with `[live]`'s thresholds.
    fn live_query(&self, time_zone: &str) -> pb::LiveQuery {
        pb::LiveQuery {
            queues: Vec::new(),
            sites: Vec::new(),
            min_interval_ms: 0,
            sl_thresholds_s: self.live.sl_thresholds_s.clone(),
            time_zone: time_zone.to_owned(),
            include_agents: false,
        }
    }

    /// The live snapshot in `[live]`'s zone and thresholds, for `/metrics`. Blocking.
    pub(crate) fn metrics_snapshot(&self, now_ns: i64) -> Result<pb::LiveSnapshot, String> {
        self.follower.live(&self.live_query(&self.live.time_zone), now_ns)
    }

    /// The board of `view` as of `now_ns`. Blocking (store reads, engine lock).
    fn board(&self, view: &View, now_ns: i64) -> Result<Board, String> {
        use callkpi_core::time::{parse_tz, rfc3339};
        // All queues, then those of ?queues= whatever their case.
        let mut snap = self.follower.live(&self.live_query(&view.time_zone), now_ns)?;
        let unknown_queues = crate::reports::select_queues(&mut snap.queues, &view.queues);
        let records = self.store.agents().map_err(|e| e.to_string())?;
        let tz = parse_tz(&view.time_zone)?;
        // "2026-11-25T15:04:05+01:00"
        let local = rfc3339(now_ns, &tz);
        let headline = self.live.sl_thresholds_s.first().copied().unwrap_or(20);
        let queues = snap
            .queues
            .into_iter()
            .map(|q| {
                let sl = q.service_level_today_pct.get(&headline).copied();
                QueueBoard {
                    service_level_status: sl_status(sl, &self.cfg),
                    service_level_today_pct: sl,
                    service_levels_today_pct: q
                        .service_level_today_pct
                        .iter()
                        .map(|(t, v)| (t.to_string(), *v))
                        .collect(),
                    abandonment_status: abandon_status(q.abandonment_today_pct, &self.cfg),
                    abandonment_today_pct: q.abandonment_today_pct,
                    queue: q.queue,
                    calls_waiting: q.calls_waiting,
                    longest_wait_s: q.longest_wait_s,
                    offered_today: q.offered_today,
                    answered_today: q.answered_today,
                    agents_available: q.agents_available,
                    agents_busy: q.agents_busy,
                    agents_paused: q.agents_paused,
                    agents_wrapup: q.agents_wrapup,
                }
            })
            .collect();
        let site_of = |agent: &str| {
            records
                .iter()
                .find(|r| r.agent_id == agent)
                .map(|r| r.site.clone())
                .filter(|s| !s.is_empty())
                .or_else(|| self.agents.iter().find(|(a, _)| a == agent).and_then(|(_, s)| s.clone()))
        };
        let mut behind: Vec<Behind> = snap
            .behind
            .iter()
            .map(|b| Behind {
                agent_id: b.agent_id.clone(),
                site: site_of(&b.agent_id),
                lag_s: Some(b.lag_s),
                never_delivered: false,
            })
            .collect();
        behind.extend(
            self.agents.iter().filter(|(a, _)| !records.iter().any(|r| &r.agent_id == a)).map(|(a, site)| Behind {
                agent_id: a.clone(),
                site: site.clone(),
                lag_s: None,
                never_delivered: true,
            }),
        );
        Ok(Board {
            at_ns: now_ns,
            date: local.get(..10).unwrap_or_default().to_owned(),
            time: local.get(11..16).unwrap_or_default().to_owned(),
            time_zone: view.time_zone.clone(),
            title: self.cfg.title.clone(),
            sl_thresholds_s: self.live.sl_thresholds_s.clone(),
            colours: Colours {
                sl_green_pct: self.cfg.sl_green_pct,
                sl_amber_pct: self.cfg.sl_amber_pct,
                abandon_amber_pct: self.cfg.abandon_amber_pct,
                abandon_red_pct: self.cfg.abandon_red_pct,
            },
            queues,
            behind,
            unknown_queues,
        })
    }

    /// The view a request asks for.
    fn view(&self, p: &Params) -> Result<View, Refusal> {
        let time_zone = p.tz.as_deref().map(str::trim).filter(|s| !s.is_empty()).unwrap_or(&self.live.time_zone);
        callkpi_core::time::parse_tz(time_zone).map_err(|e| Refusal::bad_request(format!("tz: {e}")))?;
        let mut queues: Vec<String> = p
            .queues
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|q| !q.is_empty())
            .map(str::to_owned)
            .collect();
        queues.sort();
        queues.dedup();
        if queues.len() > MAX_VIEW_QUEUES {
            return Err(Refusal::bad_request(format!("queues: more than {MAX_VIEW_QUEUES} names")));
        }
        Ok(View { time_zone: time_zone.to_owned(), queues })
    }

    /// Checks the reader token of a request, when readers are configured.
    fn authorize(&self, headers: &HeaderMap, p: &Params) -> Result<(), Refusal> {
        let Some(readers) = &self.readers else { return Ok(()) };
        let value = match (headers.get(header::AUTHORIZATION), p.token.as_deref()) {
            (Some(h), _) => Some(h.as_bytes().to_vec()),
            (None, Some(t)) => Some(format!("Bearer {t}").into_bytes()),
            (None, None) => None,
        };
        match readers.authenticate(value.as_deref()) {
            Ok(reader) => {
                tracing::debug!(%reader, "Wallboard reader authenticated.");
                Ok(())
            }
            Err(status) => Err(Refusal {
                status: StatusCode::UNAUTHORIZED,
                message: format!(
                    "{}: the wallboard needs a reader token, as ?token=<token> in the URL or as \
                     \"Authorization: Bearer <token>\"",
                    status.message()
                ),
            }),
        }
    }

    /// A receiver of `view`'s boards, starting its producer when nobody watched it yet.
    fn subscribe(self: &Arc<Self>, view: View) -> Result<watch::Receiver<Option<Arc<str>>>, Refusal> {
        if self.shutdown.is_cancelled() {
            return Err(Refusal { status: StatusCode::SERVICE_UNAVAILABLE, message: "shutting down".into() });
        }
        let mut feeds = self.feeds.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = feeds.get(&view) {
            return Ok(tx.subscribe());
        }
        if feeds.len() >= MAX_VIEWS {
            return Err(Refusal {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: format!("more than {MAX_VIEWS} distinct wallboard views (zone and queue filter) are open"),
            });
        }
        let (tx, rx) = watch::channel(None);
        feeds.insert(view.clone(), tx.clone());
        drop(feeds);
        tokio::spawn(Arc::clone(self).produce(view, tx));
        Ok(rx)
    }

    /// Publishes `view`'s boards until nobody watches or shutdown.
    async fn produce(self: Arc<Self>, view: View, tx: watch::Sender<Option<Arc<str>>>) {
        let mut notified = self.store.subscribe();
        let period = Duration::from_millis(u64::from(self.cfg.push_interval_ms));
        let mut last: Option<(Board, Instant)> = None;
        let mut failing = false;
        tracing::debug!(tz = %view.time_zone, queues = ?view.queues, "Wallboard view opened.");
        loop {
            let me = Arc::clone(&self);
            let v = view.clone();
            match tokio::task::spawn_blocking(move || me.board(&v, crate::now_ns())).await {
                Ok(Ok(board)) => {
                    failing = false;
                    let due = last.as_ref().is_none_or(|(b, at)| at.elapsed() >= HEARTBEAT || !b.same_figures(&board));
                    if due {
                        match serde_json::to_string(&board) {
                            Ok(json) => {
                                tx.send_replace(Some(Arc::from(json)));
                                last = Some((board, Instant::now()));
                            }
                            Err(error) => tracing::warn!(%error, "Cannot encode a wallboard board."),
                        }
                    }
                }
                Ok(Err(error)) if !failing => {
                    failing = true;
                    tracing::warn!(%error, "Wallboard figures unavailable; screens keep the last ones.");
                }
                Err(error) if !failing => {
                    failing = true;
                    tracing::warn!(%error, "Wallboard task failed; screens keep the last ones.");
                }
                _ => {}
            }
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                () = tx.closed() => {
                    // Under the lock, so that nobody subscribes to a feed that is ending.
                    let mut feeds = self.feeds.lock().unwrap_or_else(PoisonError::into_inner);
                    if tx.receiver_count() == 0 {
                        feeds.remove(&view);
                        break;
                    }
                }
                () = tokio::time::sleep(period) => {}
                r = notified.recv() => {
                    if let Err(tokio::sync::broadcast::error::RecvError::Closed) = r {
                        break;
                    }
                }
            }
        }
        // Dropping every sender ends the screens' event streams.
        let mut feeds = self.feeds.lock().unwrap_or_else(PoisonError::into_inner);
        if feeds.get(&view).is_some_and(|s| s.same_channel(&tx)) {
            feeds.remove(&view);
        }
        tracing::debug!(tz = %view.time_zone, queues = ?view.queues, "Wallboard view closed.");
    }
}

// === HTTP ===

/// Why a request gets no figures: its status and a one-line reason.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    fn bad_request(message: String) -> Self {
        Self { status: StatusCode::BAD_REQUEST, message }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = (self.status, private_headers(), format!("{}\n", self.message)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"callkpi wallboard\""));
        }
        response
    }
}

/// Headers of every data response: never cached (figures change, and a
/// token may be in the URL), no referrer, no MIME sniffing.
fn private_headers() -> [(header::HeaderName, HeaderValue); 3] {
    [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
    ]
}

/// The wallboard routes (see the module table).
pub(crate) fn router(wallboard: Arc<Wallboard>) -> axum::Router {
    axum::Router::new()
        .route("/wallboard", get(redirect))
        .route("/wallboard/", get(page))
        .route("/wallboard/wallboard.css", get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }))
        .route("/wallboard/wallboard.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT_JS) }))
        .route("/wallboard/api/live", get(live))
        .route("/wallboard/events", get(events))
        .with_state(wallboard)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        body,
    )
        .into_response()
}

async fn redirect(RawQuery(query): RawQuery) -> Response {
    let location = match query {
        Some(q) if !q.is_empty() => format!("/wallboard/?{q}"),
        _ => "/wallboard/".to_owned(),
    };
    match HeaderValue::try_from(location) {
        Ok(location) => (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, location)]).into_response(),
        Err(_) => Refusal::bad_request("the query is not a valid URL part".to_owned()).into_response(),
    }
}

async fn page(
    State(wb): State<Arc<Wallboard>>,
    headers: HeaderMap,
    Query(p): Query<Params>,
) -> Result<Response, Refusal> {
    wb.authorize(&headers, &p)?;
    wb.view(&p)?;
    Ok((
        private_headers(),
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
            (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
        ],
        INDEX_HTML,
    )
        .into_response())
}

async fn live(
    State(wb): State<Arc<Wallboard>>,
    headers: HeaderMap,
    Query(p): Query<Params>,
) -> Result<Response, Refusal> {
    wb.authorize(&headers, &p)?;
    let view = wb.view(&p)?;
    let me = Arc::clone(&wb);
    match tokio::task::spawn_blocking(move || me.board(&view, crate::now_ns())).await {
        Ok(Ok(board)) => Ok((private_headers(), axum::Json(board)).into_response()),
        Ok(Err(error)) => {
            tracing::warn!(%error, "Wallboard figures unavailable.");
            Err(Refusal { status: StatusCode::SERVICE_UNAVAILABLE, message: format!("figures unavailable: {error}") })
        }
        Err(error) => Err(Refusal {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("wallboard task failed: {error}"),
        }),
    }
}

async fn events(
    State(wb): State<Arc<Wallboard>>,
    headers: HeaderMap,
    Query(p): Query<Params>,
) -> Result<Response, Refusal> {
    wb.authorize(&headers, &p)?;
    let rx = wb.subscribe(wb.view(&p)?)?;
    // The current board first (once computed), then each new one.
    let stream = tokio_stream::wrappers::WatchStream::new(rx).filter_map(|board: Option<Arc<str>>| {
        board.map(|json| Ok::<_, Infallible>(Event::default().event("board").data(&*json)))
    });
    let sse = Sse::new(stream).keep_alive(KeepAlive::new().interval(HEARTBEAT));
    Ok((private_headers(), sse).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_follow_the_configured_thresholds() {
        let c = WallboardConfig::default();
        assert_eq!(sl_status(None, &c), "none");
        assert_eq!(sl_status(Some(80.0), &c), "green");
        assert_eq!(sl_status(Some(79.9), &c), "amber");
        assert_eq!(sl_status(Some(70.0), &c), "amber");
        assert_eq!(sl_status(Some(69.9), &c), "red");
        assert_eq!(abandon_status(None, &c), "none");
        assert_eq!(abandon_status(Some(4.9), &c), "green");
        assert_eq!(abandon_status(Some(5.0), &c), "amber");
        assert_eq!(abandon_status(Some(10.0), &c), "red");
        let strict = WallboardConfig { sl_green_pct: 95, sl_amber_pct: 95, ..c };
        assert_eq!(sl_status(Some(94.0), &strict), "red");
    }

    #[test]
    fn boards_differing_only_in_time_have_the_same_figures() {
        let b = Board {
            at_ns: 1,
            date: "2026-11-25".into(),
            time: "15:04".into(),
            time_zone: "UTC".into(),
            title: "t".into(),
            sl_thresholds_s: vec![20],
            colours: Colours { sl_green_pct: 80, sl_amber_pct: 70, abandon_amber_pct: 5, abandon_red_pct: 10 },
            queues: Vec::new(),
            behind: Vec::new(),
            unknown_queues: Vec::new(),
        };
        assert!(b.same_figures(&Board { at_ns: 2, ..b.clone() }));
        assert!(!b.same_figures(&Board { time: "15:05".into(), ..b.clone() }));
    }

    #[test]
    fn the_page_references_only_embedded_assets() {
        assert!(INDEX_HTML.contains("wallboard.js") && INDEX_HTML.contains("wallboard.css"));
        for text in [INDEX_HTML, STYLE_CSS, SCRIPT_JS] {
            assert!(!text.contains("http://") && !text.contains("https://"), "nothing external");
        }
        assert!(!INDEX_HTML.contains("<script>"), "no inline script (the CSP forbids it)");
    }
}
