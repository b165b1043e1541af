//! Test modules and shared helpers.

mod ami;
mod esl;
mod hep;
mod linemon;
mod queue_log;
mod run;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use callkpi_agent::sources::SpoolSink;
use callkpi_agent::spool::{Spool, SpoolConfig, spawn_writer};
use callkpi_core::event::Event;
use callkpi_feeds::FeedEvent;
use callkpi_proto::pb;
use prost::Message as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The shared fixture directory of the workspace.
pub(crate) fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/asterisk/run-a").join(name)
}

/// A test's own tracing subscriber (logs shown on failure with --nocapture).
pub(crate) fn trace() -> tracing::subscriber::DefaultGuard {
    let subscriber = tracing_subscriber::fmt().with_env_filter("callkpi_agent=debug").with_test_writer().finish();
    tracing::subscriber::set_default(subscriber)
}

pub(crate) fn spool_config(dir: &Path) -> SpoolConfig {
    SpoolConfig { path: dir.join("spool"), ..SpoolConfig::default() }
}

/// A spool with its group-commit writer.
pub(crate) struct TestSpool {
    pub(crate) spool: Spool,
    pub(crate) sink: SpoolSink,
    stop: CancellationToken,
    writer: JoinHandle<()>,
}

impl TestSpool {
    pub(crate) fn open(cfg: &SpoolConfig) -> Self {
        let spool = Spool::open(cfg, "agent-1", "paris").expect("spool opens").spool;
        let stop = CancellationToken::new();
        let (handle, writer) = spawn_writer(spool.clone(), cfg, stop.clone());
        Self { sink: SpoolSink::new(spool.clone(), handle), spool, stop, writer }
    }

    /// Stops the writer (drained and synced) and releases the store.
    pub(crate) async fn close(self) {
        self.stop.cancel();
        drop(self.sink);
        self.writer.await.expect("writer ends");
        drop(self.spool);
    }

    /// Every stored event, in seq order, as core events.
    pub(crate) fn events(&self) -> Vec<Event> {
        let range = self.spool.read_range(0, usize::MAX, usize::MAX).expect("reads");
        range
            .map(|r| r.events)
            .unwrap_or_default()
            .into_iter()
            .map(|(seq, bytes)| {
                let e = pb::Event::decode(bytes.as_slice()).expect("decodes");
                assert_eq!(e.seq, seq);
                Event::try_from(e).expect("converts")
            })
            .collect()
    }
}

/// What a stored event must equal: the mapper's output, field by field.
pub(crate) fn same(stored: &Event, expected: &FeedEvent) -> bool {
    stored.call_id == expected.call_id
        && stored.leg_id == expected.leg_id
        && stored.time.source_time == expected.source_time
        && stored.kind == expected.kind
}

/// Polls `f` every 20 ms until it holds, for at most `patience`.
pub(crate) async fn eventually(patience: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < patience, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Kind name of an event, for counts.
pub(crate) fn kind_name(kind: &callkpi_core::event::EventKind) -> String {
    let text = format!("{kind:?}");
    text.split([' ', '{', '(']).next().unwrap_or_default().to_owned()
}
