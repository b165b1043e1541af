//! `callkpi demo`: the whole chain on one machine, in this process, with
//! nothing installed.
//!
//! ```text
//! demo PBX (AMI on loopback) ──▶ agent (spool in a temp dir) ──gRPC──▶ aggregator (store in the temp dir)
//!   recording replay / synthetic                                        │
//!                                                                       ├─ WatchKpis ──▶ the live table here
//!                                                                       ├─ GetKpis   ──▶ the final table, `callkpi report`
//!                                                                       └─ HTTP      ──▶ /wallboard/, /metrics
//! ```
//!
//! The aggregator and the agent are the libraries the real binaries run,
//! configured in code: loopback ports chosen by the OS, fresh random
//! tokens, their data in one temporary directory that is removed at exit.
//! The PBX (`pbx`) is fed by the bundled Asterisk recording
//! (`recording`, replayed `--speed` times faster than it happened, its
//! timestamps moved so that it ends now) and/or, with `--seed`, a synthetic
//! call centre (`synthetic`) that runs until stopped.
//!
//! The live table is `callkpi watch`'s, redrawn in place on a terminal;
//! elsewhere the figures are printed as plain lines, at most once a second.
//! After `--seconds N`, or on Ctrl-C / SIGTERM, the feed stops, the agent's
//! spool is given a moment to drain, the per-queue table of `callkpi
//! analyze` is printed from `GetKpis`, then the agent and the aggregator shut
//! down in that order (each with its own graceful shutdown) and the
//! directory is removed. A second signal exits at once (130), still removing
//! the directory.

mod pbx;
mod recording;
mod synthetic;

use std::io::{IsTerminal as _, Write as _};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use callkpi_agent::config::{AmiSourceConfig, MetricsConfig, Secret, SourcesConfig, UplinkConfig};
use callkpi_agent::spool::{Spool, SpoolConfig};
use callkpi_aggregator::config::{AgentConfig, ReaderConfig};
use callkpi_proto::pb;
use clap::{Args, Parser};
use rand::Rng as _;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::analyze::{ReportOptions, UsageError};
use crate::output::{self, Format};
use crate::report::{self, Connection, ReportArgs};
use crate::watch;

/// Default replay speed: the recording's 6 minutes in about 24 s.
pub const DEFAULT_SPEED: f64 = 15.0;

/// The demo agent's id and site.
const AGENT_ID: &str = "demo-pbx";
const SITE: &str = "demo";

/// Live service level threshold, seconds (as `callkpi watch`'s default).
const LIVE_SL_THRESHOLDS: [u32; 1] = [20];

/// Options of `callkpi demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Stop after this many seconds, print the final per-queue KPI table and
    /// exit (default: run until Ctrl-C).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub seconds: Option<u64>,
    /// How many times faster than real time the bundled recording (about 6
    /// minutes of calls) is replayed, 1 to 10000.
    #[arg(long, value_name = "X", default_value_t = DEFAULT_SPEED)]
    pub speed: f64,
    /// After the recording, run a synthetic call centre, with this random
    /// seed, until stopped.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Skip the recording: the synthetic call centre only (needs --seed).
    #[arg(long, requires = "seed")]
    pub no_recording: bool,
}

/// Wall clock, Unix ns.
fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

// === what the PBX is doing ===

/// Where the feed is, for the status line and for showing waits in
/// recording time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
enum Phase {
    /// Waiting for the agent to log in to the PBX.
    #[default]
    Starting,
    /// Replaying the recording.
    Replaying { clock: recording::ReplayClock, played_s: f64, total_s: f64 },
    /// The recording has been sent.
    Replayed { clock: recording::ReplayClock, total_s: f64 },
    /// The synthetic call centre runs.
    Synthetic { seed: u64, calls: u64 },
}

/// The feed's phase, shared with the display.
#[derive(Debug, Default)]
struct FeedStatus(Mutex<Phase>);

impl FeedStatus {
    fn set(&self, phase: Phase) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = phase;
    }

    fn get(&self) -> Phase {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Phase {
    fn describe(&self, speed: f64) -> String {
        match self {
            Phase::Starting => "PBX: waiting for the agent to log in.".to_owned(),
            Phase::Replaying { played_s, total_s, .. } => format!(
                "PBX: replaying a real Asterisk recording at {speed}x: {played_s:.0} of {total_s:.0} s of calls."
            ),
            Phase::Replayed { total_s, .. } => {
                format!("PBX: the recording ({total_s:.0} s of calls) has been replayed.")
            }
            Phase::Synthetic { seed, calls } => {
                format!("PBX: synthetic call centre (seed {seed}): {calls} calls so far.")
            }
        }
    }

    /// How far the data's "now" is behind the wall clock at `at_ns`.
    fn lag_ns(&self, at_ns: i64) -> i64 {
        match self {
            Phase::Replaying { clock, .. } | Phase::Replayed { clock, .. } => clock.lag_ns(at_ns),
            _ => 0,
        }
    }
}

/// Feeds the PBX: waits for the agent's login, then the recording, then
/// the synthetic call centre, as asked.
async fn feed(
    recording: Option<f64>,
    seed: Option<u64>,
    tx: mpsc::Sender<Vec<u8>>,
    logged_in: Arc<Notify>,
    status: Arc<FeedStatus>,
    stop: CancellationToken,
) {
    tokio::select! {
        () = logged_in.notified() => {}
        () = stop.cancelled() => return,
    }
    if let Some(speed) = recording
        && !recording::replay(speed, &tx, &status, &stop).await
    {
        return;
    }
    if let Some(seed) = seed {
        synthetic::run(seed, &tx, &status, &stop).await;
    }
}

// === signals ===

/// SIGINT and SIGTERM.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self { int: signal(SignalKind::interrupt())?, term: signal(SignalKind::terminate())? })
    }

    /// # Cancel safety
    /// Cancel safe: a signal not yet received stays pending.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}

// === the run ===

/// Runs the demo.
///
/// # Errors
/// On a bad option (a [`UsageError`]), or when a part cannot start.
pub fn main(a: &DemoArgs) -> anyhow::Result<()> {
    if !(a.speed.is_finite() && (1.0..=10_000.0).contains(&a.speed)) {
        return Err(UsageError(format!("--speed must be between 1 and 10000, not {}", a.speed)).into());
    }
    let dir = tempfile::Builder::new().prefix("callkpi-demo-").tempdir().context("creating a temporary directory")?;
    let path = dir.path().to_owned();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting a runtime")?;
    let result = runtime.block_on(run(a, &path));
    // Everything was stopped and awaited; only a stuck blocking task could remain.
    runtime.shutdown_timeout(Duration::from_secs(2));
    let removed = dir.close().with_context(|| format!("removing {}", path.display()));
    result?;
    removed?;
    writeln!(std::io::stdout(), "Stopped; {} removed.", path.display())?;
    Ok(())
}

/// A random token for this run only.
fn token() -> String {
    rand::rng().sample_iter(rand::distr::Alphanumeric).take(24).map(char::from).collect()
}

async fn bind() -> anyhow::Result<TcpListener> {
    TcpListener::bind("127.0.0.1:0").await.context("binding a loopback port")
}

async fn run(a: &DemoArgs, dir: &Path) -> anyhow::Result<()> {
    // First, so that a Ctrl-C during start-up is a clean stop too.
    let mut signals = Signals::new().context("installing signal handlers")?;
    let (agent_token, reader_token) = (token(), token());
    let (grpc, http, ami) = (bind().await?, bind().await?, bind().await?);
    let (grpc_addr, http_addr, ami_addr) = (grpc.local_addr()?, http.local_addr()?, ami.local_addr()?);

    let cfg = callkpi_aggregator::Config {
        listen: grpc_addr,
        metrics_listen: http_addr,
        store_path: dir.join("aggregator"),
        store_cache_bytes: 16 << 20,
        heartbeat_interval_ms: 1_000,
        agents: vec![AgentConfig {
            id: AGENT_ID.to_owned(),
            site: Some(SITE.to_owned()),
            token_sha256: Some(callkpi_aggregator::token_sha256_hex(&agent_token)),
            token_file: None,
        }],
        readers: vec![ReaderConfig {
            name: "demo".to_owned(),
            token_sha256: callkpi_aggregator::token_sha256_hex(&reader_token),
        }],
        ..callkpi_aggregator::Config::default()
    };
    let aggregator = tokio::task::spawn_blocking(move || callkpi_aggregator::Aggregator::open(cfg))
        .await
        .context("aggregator start-up task")??
        .with_shutdown_grace(Duration::from_secs(5));
    let aggregator_stop = CancellationToken::new();
    let mut aggregator_task = tokio::spawn(aggregator.serve(grpc, http, aggregator_stop.clone()));

    let (tx, rx) = mpsc::channel(64);
    let logged_in = Arc::new(Notify::new());
    let pbx_stop = CancellationToken::new();
    let pbx_task = tokio::spawn(pbx::serve(ami, rx, Arc::clone(&logged_in), pbx_stop.clone()));
    let status = Arc::new(FeedStatus::default());
    let feed_stop = CancellationToken::new();
    let recording = (!a.no_recording).then_some(a.speed);
    let feed_task = tokio::spawn(feed(recording, a.seed, tx, logged_in, Arc::clone(&status), feed_stop.clone()));

    let agent_cfg = callkpi_agent::Config {
        agent_id: AGENT_ID.to_owned(),
        site: SITE.to_owned(),
        uplink: UplinkConfig {
            url: format!("http://{grpc_addr}"),
            token: Some(Secret::new(agent_token)),
            backoff_initial_ms: 100,
            backoff_max_ms: 1_000,
            connect_timeout_ms: 2_000,
            heartbeat_interval_ms: 1_000,
            ..UplinkConfig::default()
        },
        spool: SpoolConfig { path: dir.join("spool"), max_bytes: 64 << 20, ..SpoolConfig::default() },
        metrics: MetricsConfig { listen: "disabled".to_owned() },
        sources: SourcesConfig {
            ami: vec![AmiSourceConfig {
                name: "pbx".to_owned(),
                address: ami_addr.to_string(),
                username: "callkpi".to_owned(),
                secret: Some(Secret::new("demo")),
                // The recording holds the QueueStatus reply of its own session.
                queue_status_on_connect: false,
                backoff_initial_ms: 100,
                backoff_max_ms: 1_000,
                ..AmiSourceConfig::default()
            }],
            ..SourcesConfig::default()
        },
    };
    let agent_stop = CancellationToken::new();
    let agent = callkpi_agent::start(agent_cfg, agent_stop.clone()).await.context("starting the agent")?;
    let spool = agent.spool.clone();

    let conn = Connection {
        server: format!("http://{grpc_addr}"),
        token: Some(reader_token.clone()),
        token_file: None,
        ca: None,
        tls_domain: None,
    };
    let intro = Intro { a, dir, grpc: conn.server.clone(), http: format!("http://{http_addr}"), token: reader_token };
    let tty = std::io::stdout().is_terminal();
    let stopped_by = tokio::select! {
        r = live(&conn, &intro, &status, a.speed, tty, &mut signals) => r?,
        r = &mut aggregator_task => {
            r.context("aggregator task")??;
            anyhow::bail!("the aggregator stopped unexpectedly");
        }
    };

    // A second signal from here on: exit at once, still removing the data.
    let dir_owned = dir.to_owned();
    tokio::spawn(async move {
        let name = signals.recv().await;
        let _ = std::fs::remove_dir_all(&dir_owned);
        let _ = writeln!(std::io::stderr(), "callkpi demo: second {name}; exiting now.");
        std::process::exit(130);
    });

    feed_stop.cancel();
    let _ = feed_task.await;
    let mut out = std::io::stdout().lock();
    writeln!(out, "\n{stopped_by}; waiting for the agent to deliver what it has spooled.")?;
    drop(out);
    if !wait_delivered(&spool, Duration::from_secs(5)).await {
        tracing::warn!("The agent still holds undelivered events; the final table may miss them.");
    }
    let final_table = final_report(&conn).await;
    let mut out = std::io::stdout().lock();
    match final_table {
        Ok(report) => {
            writeln!(
                out,
                "Final KPIs per queue (Reports.GetKpis over the demo's data, as `callkpi analyze` prints them):"
            )?;
            output::write(&report, Format::Table, false, &mut out)?;
        }
        Err(e) => writeln!(out, "No final table: {e:#}")?,
    }
    drop(out);

    drop(spool);
    agent_stop.cancel();
    match tokio::time::timeout(Duration::from_secs(15), agent.wait()).await {
        Ok(r) => r.context("agent shutdown")?,
        Err(_) => tracing::warn!("The agent did not stop within 15 s."),
    }
    pbx_stop.cancel();
    let _ = pbx_task.await;
    aggregator_stop.cancel();
    match tokio::time::timeout(Duration::from_secs(15), aggregator_task).await {
        Ok(r) => r.context("aggregator task")??,
        Err(_) => tracing::warn!("The aggregator did not stop within 15 s."),
    }
    Ok(())
}

/// Waits until every spooled event is acknowledged and nothing new has
/// been spooled for a few polls; false if `patience` ran out first.
async fn wait_delivered(spool: &Spool, patience: Duration) -> bool {
    let deadline = Instant::now() + patience;
    let (mut last, mut quiet) = (u64::MAX, 0);
    loop {
        let stats = spool.stats();
        quiet = if stats.depth == 0 && stats.last_seq == last { quiet + 1 } else { 0 };
        if quiet >= 3 {
            return true;
        }
        last = stats.last_seq;
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GetKpis` per queue over everything, with `callkpi analyze`'s defaults.
async fn final_report(conn: &Connection) -> anyhow::Result<crate::analyze::AnalyzeOutput> {
    /// Parsed rather than built, so the defaults are those of `analyze`.
    #[derive(Parser)]
    struct Final {
        #[command(flatten)]
        report: ReportOptions,
    }
    let everything = ["--from", "1970-01-01T00:00:00Z"];
    let report =
        Final::try_parse_from([&["demo", "--by", "queue", "--interval", "all"][..], &everything].concat())?.report;
    let args = ReportArgs { conn: conn.clone(), report };
    tokio::time::timeout(Duration::from_secs(20), report::run(&args)).await.context("GetKpis timed out")?
}

// === display ===

/// What the header says.
struct Intro<'a> {
    a: &'a DemoArgs,
    dir: &'a Path,
    grpc: String,
    http: String,
    token: String,
}

impl Intro<'_> {
    fn text(&self) -> String {
        let stop = match self.a.seconds {
            Some(n) => format!("after {n} s, or Ctrl-C"),
            None => "Ctrl-C".to_owned(),
        };
        format!(
            "callkpi demo: a simulated Asterisk, an agent and an aggregator, in this process, on loopback.\n\
             \x20 Wallboard: {http}/wallboard/?token={token}\n\
             \x20 gRPC:      {grpc}  (reader token {token})\n\
             \x20 Try:       callkpi report --server {grpc} --token {token} --by queue --interval all\n\
             \x20 Data:      {dir} (removed at exit)\n\
             \x20 Stops:     {stop}\n",
            http = self.http,
            grpc = self.grpc,
            token = self.token,
            dir = self.dir.display(),
        )
    }
}

/// Shows live figures until `--seconds` have passed or a signal came;
/// returns why it stopped.
async fn live(
    conn: &Connection,
    intro: &Intro<'_>,
    status: &FeedStatus,
    speed: f64,
    tty: bool,
    signals: &mut Signals,
) -> anyhow::Result<String> {
    let started = Instant::now();
    let deadline = intro.a.seconds.map(|s| started + Duration::from_secs(s));
    let until_deadline = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    let mut until_deadline = std::pin::pin!(until_deadline);
    if !tty {
        let mut out = std::io::stdout().lock();
        write!(out, "{}", intro.text())?;
        out.flush()?;
    }
    let mut client = report::connect(conn).await?;
    let query = pb::LiveQuery {
        queues: Vec::new(),
        sites: Vec::new(),
        min_interval_ms: if tty { 500 } else { 1_000 },
        sl_thresholds_s: LIVE_SL_THRESHOLDS.to_vec(),
        time_zone: "UTC".to_owned(),
        include_agents: false,
    };
    let mut stream = client
        .watch_kpis(query)
        .await
        .map_err(|s| anyhow::anyhow!("WatchKpis: {:?}: {}", s.code(), s.message()))?
        .into_inner();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last: Option<pb::LiveSnapshot> = None;
    let mut last_phase = None;
    let (mut unprinted, mut last_printed) = (false, None);
    loop {
        tokio::select! {
            () = &mut until_deadline => {
                return Ok(format!("{} s elapsed", intro.a.seconds.unwrap_or_default()));
            }
            name = signals.recv() => return Ok(format!("{name} received")),
            msg = stream.message() => {
                let snap = msg.map_err(|s| anyhow::anyhow!("WatchKpis: {:?}: {}", s.code(), s.message()))?
                    .context("the aggregator ended the live stream")?;
                last = Some(in_data_time(snap, &status.get()));
                unprinted = true;
            }
            _ = tick.tick() => {}
        }
        let phase = status.get();
        // Plain lines: at most one set per second (snapshots come with every ingest).
        if !tty
            && unprinted
            && last_printed.is_none_or(|t: Instant| t.elapsed() >= Duration::from_secs(1))
            && let Some(s) = &last
        {
            let mut out = std::io::stdout().lock();
            for line in plain_lines(s, started.elapsed()) {
                writeln!(out, "{line}")?;
            }
            out.flush()?;
            unprinted = false;
            last_printed = Some(Instant::now());
        }
        if tty {
            let mut out = std::io::stdout().lock();
            // Home the cursor and clear, then draw, as `callkpi watch` does.
            write!(out, "\x1b[H\x1b[2J{}\n{}\n", intro.text(), phase.describe(speed))?;
            if let Some(s) = &last {
                writeln!(out, "{}", watch::table(s, &LIVE_SL_THRESHOLDS))?;
            }
            out.flush()?;
        } else if last_phase.is_none_or(|p: Phase| std::mem::discriminant(&p) != std::mem::discriminant(&phase)) {
            let mut out = std::io::stdout().lock();
            writeln!(out, "[{:5.1} s] {}", started.elapsed().as_secs_f64(), phase.describe(speed))?;
            out.flush()?;
        }
        last_phase = Some(phase);
    }
}

/// Longest waits in the data's time: while the recording is replayed
/// faster than real time, the aggregator's wall clock runs ahead of it.
fn in_data_time(mut snap: pb::LiveSnapshot, phase: &Phase) -> pb::LiveSnapshot {
    let lag_s = phase.lag_ns(snap.at_ns) as f64 / 1e9;
    for q in &mut snap.queues {
        q.longest_wait_s = (q.longest_wait_s - lag_s).max(0.0);
    }
    snap
}

/// One line per queue, for logs and pipes.
fn plain_lines(s: &pb::LiveSnapshot, elapsed: Duration) -> Vec<String> {
    let pct = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1} %"));
    s.queues
        .iter()
        .map(|q| {
            let sl: Vec<String> = LIVE_SL_THRESHOLDS
                .iter()
                .map(|t| format!("SL{t}s today {}", pct(q.service_level_today_pct.get(t).copied())))
                .collect();
            format!(
                "[{:5.1} s] {}: waiting {}, longest {:.0} s, {}, abandoned today {}, offered today {}, agents available {} busy {} wrap-up {} paused {}",
                elapsed.as_secs_f64(),
                q.queue,
                q.calls_waiting,
                q.longest_wait_s,
                sl.join(", "),
                pct(q.abandonment_today_pct),
                q.offered_today,
                q.agents_available,
                q.agents_busy,
                q.agents_wrapup,
                q.agents_paused,
            )
        })
        .collect()
}
