//! Spool durable append throughput against a plain file, in the same run.
//!
//! Target (issue): `Spool::append` of 100-byte events at least 0.5x the
//! events/s of a plain file appended with `fdatasync` every 1000 records.
//! Both sides make the same durability promise per 1000 records: one
//! `sync_data` (the spool's `Durable::sync` is sled's flush plus an
//! `fdatasync`).
//!
//! - `file/append_100B_fdatasync_per_1000`: 1000 `write_all`s of 100 bytes
//!   on an `O_APPEND` file, then `sync_data` (the reference).
//! - `file/buffered_100B_fdatasync_per_1000`: the same through a
//!   `BufWriter`, one `write` per 1000 records: the fastest plain file.
//! - `spool/append_1000x100B`: one `Spool::append` of 1000 inputs whose
//!   `pb::Event` encodings are 100 bytes: seq assignment, encoding, one sled
//!   batch, one sync. Building the inputs is the source's work and not timed.
//!
//! - `spool/read_range_1000x100B`: one `Spool::read_range` of 1000 of those
//!   events (what the uplink does per batch), from rotating start seqs over
//!   what the append bench stored: group lookups, decode checks, copies.
//!
//! - `sled/apply_batch_1000x100B_{no_sync,sync}`: sled alone, 1000 inserts
//!   of 100-byte values in one batch, without and with `Durable::sync`:
//!   where the spool's time went with one key per event (it now writes one
//!   key per group of up to 4 KiB of events).
//!
//! Each iteration is 1000 events (`Throughput::Elements`), so criterion
//! prints events/s for each; the ratio is spool / reference. Files live
//! under `CARGO_TARGET_TMPDIR` (the target directory's disk, not a tmpfs).
//! Short on purpose: 10 samples, about 20 s in all.

use std::hint::black_box;
use std::io::{BufWriter, Write as _};
use std::path::PathBuf;
use std::time::Duration;

use callkpi_agent::spool::{Spool, SpoolConfig, SpoolInput};
use callkpi_core::event::{EventId, EventKind, SourceKind};
use callkpi_feeds::{CaptureTime, FeedEvent};
use callkpi_proto::pb;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message as _;

const RECORDS: usize = 1000;
const RECORD_BYTES: usize = 100;

fn scratch(name: &str) -> tempfile::TempDir {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&base).expect("target tmpdir");
    tempfile::Builder::new().prefix(name).tempdir_in(base).expect("scratch dir")
}

fn feed_event(call_id_len: usize) -> FeedEvent {
    FeedEvent {
        call_id: "1".repeat(call_id_len),
        leg_id: "SIP/trunk-0000a1b2".into(),
        source_time: Some(1_700_000_000_000_000_000),
        kind: EventKind::QueueStart,
    }
}

fn captured() -> CaptureTime {
    CaptureTime { wall: 1_700_000_000_123_456_789, monotonic: 123_456_789, clock_synced: true }
}

/// A feed event whose encoding (agent "agent-1", site "lyon", a 3-byte
/// seq varint) is `RECORD_BYTES` long.
fn event_of_100_bytes() -> FeedEvent {
    let size = |len: usize| {
        let e = feed_event(len).into_event(
            EventId { agent_id: "agent-1".into(), seq: 100_000 },
            "lyon",
            SourceKind::AsteriskAmi,
            captured(),
        );
        pb::Event::from(e).encoded_len()
    };
    let len = (0..RECORD_BYTES).find(|&l| size(l) >= RECORD_BYTES).expect("some length fits");
    assert_eq!(size(len), RECORD_BYTES, "tune the fixture");
    feed_event(len)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("durable_append");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(RECORDS as u64));

    let record = [0x5Au8; RECORD_BYTES];
    let dir = scratch("file-");
    let mut file =
        std::fs::OpenOptions::new().create(true).append(true).open(dir.path().join("records")).expect("open file");
    group.bench_function("file/append_100B_fdatasync_per_1000", |b| {
        b.iter(|| {
            for _ in 0..RECORDS {
                file.write_all(black_box(&record)).expect("write");
            }
            file.sync_data().expect("fdatasync");
        });
    });

    let mut buffered = BufWriter::with_capacity(RECORDS * RECORD_BYTES, file.try_clone().expect("clone"));
    group.bench_function("file/buffered_100B_fdatasync_per_1000", |b| {
        b.iter(|| {
            for _ in 0..RECORDS {
                buffered.write_all(black_box(&record)).expect("write");
            }
            buffered.flush().expect("flush");
            buffered.get_ref().sync_data().expect("fdatasync");
        });
    });
    drop((buffered, file, dir));

    let dir = scratch("spool-");
    let cfg = SpoolConfig { path: dir.path().join("spool"), max_bytes: 4 << 30, ..SpoolConfig::default() };
    let spool = Spool::open(&cfg, "agent-1", "lyon").expect("open spool").spool;
    let event = event_of_100_bytes();
    let inputs = || {
        (0..RECORDS)
            .map(|_| SpoolInput {
                source: SourceKind::AsteriskAmi,
                replayable: false,
                event: event.clone(),
                captured: captured(),
            })
            .collect::<Vec<_>>()
    };
    group.bench_function("spool/append_1000x100B", |b| {
        b.iter_batched(inputs, |batch| spool.append(batch, None).expect("append"), BatchSize::PerIteration);
    });
    let held = spool.last_seq();
    assert!(held > RECORDS as u64, "the append bench stored events to read");
    let mut after = 0u64;
    group.bench_function("spool/read_range_1000x100B", |b| {
        b.iter(|| {
            let range = spool.read_range(after, RECORDS, usize::MAX).expect("read").expect("a range");
            assert_eq!(range.events.len(), RECORDS);
            after = (after + 7 * RECORDS as u64 + 13) % (held - RECORDS as u64);
            black_box(range)
        });
    });
    drop(spool);

    // Where the spool's time goes: sled's batch alone, then with the sync.
    let dir = scratch("sled-");
    let store = callkpi_durable::Durable::open(&dir.path().join("sled"), cfg.cache_bytes).expect("open sled").store;
    let mut next = 0u64;
    let batch_of = |next: &mut u64| {
        let mut batch = sled::Batch::default();
        for _ in 0..RECORDS {
            *next += 1;
            batch.insert(&next.to_be_bytes(), &record[..]);
        }
        batch
    };
    group.bench_function("sled/apply_batch_1000x100B_no_sync", |b| {
        b.iter_batched(
            || batch_of(&mut next),
            |batch| store.db().apply_batch(batch).expect("apply"),
            BatchSize::PerIteration,
        );
    });
    group.bench_function("sled/apply_batch_1000x100B_sync", |b| {
        b.iter_batched(
            || batch_of(&mut next),
            |batch| {
                store.db().apply_batch(batch).expect("apply");
                store.sync().expect("sync");
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
