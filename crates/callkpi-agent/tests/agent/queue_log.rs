//! queue_log tail: append, partial line, rotation, truncation and restart
//! from the checkpoint; every line's events exactly once.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use callkpi_agent::clock::Clock;
use callkpi_agent::config::QueueLogSourceConfig;
use callkpi_agent::metrics::Metrics;
use callkpi_agent::sources::queue_log::{Checkpoint, QueueLogSource, checkpoint_key};
use callkpi_feeds::queue_log::{QueueLogConfig, QueueLogMapper};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{TestSpool, eventually, fixture, same, spool_config, trace};

const PATIENCE: Duration = Duration::from_secs(15);

fn append(path: &Path, bytes: &[u8]) {
    let mut f = OpenOptions::new().create(true).append(true).open(path).expect("open for append");
    f.write_all(bytes).expect("append");
}

fn start(spool: &TestSpool, path: &Path, metrics: &Metrics) -> (CancellationToken, JoinHandle<()>) {
    start_polling(spool, path, metrics, 20)
}

fn start_polling(
    spool: &TestSpool,
    path: &Path,
    metrics: &Metrics,
    poll_interval_ms: u64,
) -> (CancellationToken, JoinHandle<()>) {
    let config = QueueLogSourceConfig {
        name: "ql".to_owned(),
        path: path.to_owned(),
        poll_interval_ms,
        rotate_wait_ms: 300,
        ..QueueLogSourceConfig::default()
    };
    let source = QueueLogSource::new(&config, spool.sink.clone(), Clock::new(), metrics.source("ql")).expect("source");
    let stop = CancellationToken::new();
    let task = tokio::spawn(source.run(stop.clone()));
    (stop, task)
}

/// The recording, and a scratch directory with the path of its queue_log.
fn scene() -> (Vec<u8>, tempfile::TempDir, std::path::PathBuf) {
    let input = std::fs::read(fixture("queue_log")).expect("fixture");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("queue_log");
    (input, dir, path)
}

/// Number of events the mapper makes from the first `lines` lines.
fn events_of(lines: &[&[u8]], n: usize) -> usize {
    let prefix: Vec<u8> = lines[..n].concat();
    QueueLogMapper::new(QueueLogConfig::default()).map_all(&prefix).len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_follows_appends_rotation_truncation_and_restart_exactly_once() {
    let _guard = trace();
    let input = std::fs::read(fixture("queue_log")).expect("fixture");
    let lines: Vec<&[u8]> = input.split_inclusive(|&b| b == b'\n').collect();
    assert_eq!(lines.len(), 176);
    let expected = QueueLogMapper::new(QueueLogConfig::default()).map_all(&input);

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("queue_log");
    let cfg = spool_config(dir.path());
    let metrics = Metrics::new();
    let spool = TestSpool::open(&cfg);
    let count = |s: &TestSpool| s.events().len();

    // 1. The first 40 lines and half of the 41st.
    let (head, tail) = lines[40].split_at(lines[40].len() / 2);
    append(&path, &lines[..40].concat());
    append(&path, head);
    let (stop, task) = start(&spool, &path, &metrics);
    let want = events_of(&lines, 40);
    eventually(PATIENCE, "the first 40 lines", || count(&spool) == want).await;

    // 2. The rest of line 41 and more lines: appended.
    append(&path, tail);
    append(&path, &lines[41..80].concat());
    let want = events_of(&lines, 80);
    eventually(PATIENCE, "appended lines", || count(&spool) == want).await;

    // 3. Rotation: rename, Asterisk writes two more lines to the old file
    //    (still open), then reopens the path as a new file.
    let rotated = dir.path().join("queue_log.1");
    std::fs::rename(&path, &rotated).expect("rename");
    append(&rotated, &lines[80..82].concat());
    append(&path, &lines[82..120].concat());
    let want = events_of(&lines, 120);
    eventually(PATIENCE, "lines around a rotation", || count(&spool) == want).await;
    assert_eq!(metrics.source("ql").rotations.get(), 1);

    // 4. Truncation in place (copytruncate), then new lines.
    OpenOptions::new().write(true).truncate(true).open(&path).expect("truncate");
    eventually(PATIENCE, "the truncation", || metrics.source("ql").truncations.get() == 1).await;
    append(&path, &lines[120..150].concat());
    let want = events_of(&lines, 150);
    eventually(PATIENCE, "lines after a truncation", || count(&spool) == want).await;

    // 5. Restart: stop the source, close and reopen the spool, append
    //    while stopped, start again from the checkpoint.
    stop.cancel();
    task.await.expect("source ends");
    spool.close().await;
    append(&path, &lines[150..].concat());
    let spool = TestSpool::open(&cfg);
    let stored = spool.spool.checkpoint(&checkpoint_key("ql")).expect("reads").expect("a checkpoint");
    let cp = Checkpoint::decode(&stored).expect("decodes");
    assert_eq!(cp.offset, lines[120..150].concat().len() as u64, "checkpoint at the end of the new file");
    let metrics2 = Metrics::new();
    let (stop, task) = start(&spool, &path, &metrics2);
    eventually(PATIENCE, "lines appended while stopped", || count(&spool) == expected.len()).await;
    // Nothing more comes (no duplicate after a few polls).
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    task.await.expect("source ends");

    let stored = spool.events();
    assert_eq!(stored.len(), expected.len());
    for (i, (s, e)) in stored.iter().zip(&expected).enumerate() {
        assert!(same(s, e), "event {i} differs: stored {s:?}, expected {e:?}");
        assert_eq!(s.id.seq, i as u64 + 1, "seqs are dense");
    }
    assert_eq!(metrics.source("ql").malformed.get(), 0);
    spool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_and_a_rotation_are_read_on_the_file_systems_notice_not_the_poll() {
    let _guard = trace();
    let (input, dir, path) = scene();
    let lines: Vec<&[u8]> = input.split_inclusive(|&b| b == b'\n').collect();
    let cfg = spool_config(dir.path());
    let metrics = Metrics::new();
    let spool = TestSpool::open(&cfg);
    append(&path, &lines[..20].concat());
    // A poll this slow would take a minute: only inotify can be this quick.
    let (stop, task) = start_polling(&spool, &path, &metrics, 60_000);
    let soon = Duration::from_secs(5);
    eventually(soon, "the lines present at start", || spool.events().len() == events_of(&lines, 20)).await;
    append(&path, &lines[20..40].concat());
    eventually(soon, "appended lines", || spool.events().len() == events_of(&lines, 40)).await;
    std::fs::rename(&path, dir.path().join("queue_log.1")).expect("rename");
    append(&path, &lines[40..60].concat());
    eventually(soon, "the new file after a rotation", || spool.events().len() == events_of(&lines, 60)).await;
    stop.cancel();
    task.await.expect("source ends");
    spool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_replaced_while_stopped_is_read_from_the_start() {
    let _guard = trace();
    let (input, dir, path) = scene();
    let lines: Vec<&[u8]> = input.split_inclusive(|&b| b == b'\n').collect();
    let cfg = spool_config(dir.path());
    let metrics = Metrics::new();

    let spool = TestSpool::open(&cfg);
    append(&path, &lines[..30].concat());
    let (stop, task) = start(&spool, &path, &metrics);
    let first = events_of(&lines, 30);
    eventually(PATIENCE, "the first file", || spool.events().len() == first).await;
    stop.cancel();
    task.await.expect("source ends");

    // Replaced by another file (new inode, other content) while stopped.
    std::fs::remove_file(&path).expect("remove");
    append(&path, &lines[30..100].concat());
    let (stop, task) = start(&spool, &path, &metrics);
    let second = QueueLogMapper::new(QueueLogConfig::default()).map_all(&lines[30..100].concat()).len();
    eventually(PATIENCE, "the new file from 0", || spool.events().len() == first + second).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(spool.events().len(), first + second);
    stop.cancel();
    task.await.expect("source ends");
    spool.close().await;
}

#[test]
fn checkpoint_round_trips_and_rejects_garbage() {
    let cp = Checkpoint { inode: 42, offset: 1234, fingerprint_len: 256, fingerprint: 0xdead_beef };
    assert_eq!(Checkpoint::decode(&cp.encode()), Some(cp));
    assert_eq!(Checkpoint::decode(b"nope"), None);
    let mut other_version = cp.encode();
    other_version[0] = 9;
    assert_eq!(Checkpoint::decode(&other_version), None);
}
