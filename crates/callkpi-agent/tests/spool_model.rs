//! Model test of the spool, after vector's disk buffer model test: random
//! sequences of appends, reads, acks, crashes and reopens run against the
//! real sled spool and against a plain `VecDeque` model; after every step
//! the observable state must be the same.
//!
//! A crash copies the store directory as the disk holds it at that moment,
//! without closing or syncing sled, then opens the copy: what a killed
//! process leaves. Because `append` and `ack` return only after a real
//! sync, nothing they returned may be missing from the copy.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use callkpi_agent::spool::{AppendOutcome, Spool, SpoolConfig, SpoolInput, entry_cost};
use callkpi_core::event::{EventId, EventKind, SourceKind};
use callkpi_feeds::{CaptureTime, FeedEvent};
use callkpi_proto::pb;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use prost::Message as _;

const AGENT: &str = "agent-m";
const SITE: &str = "nantes";
const CHECKPOINTS: [&str; 2] = ["queue_log", "ami"];
/// Call-id length of most generated events.
const COMMON_SIZE: usize = 20;
const RESERVE: u64 = 512;

/// The events' share of the cap: exactly 12 events of the common size (at
/// seqs below 128), so the cap is hit often and its boundary exactly.
fn limit() -> u64 {
    12 * entry_cost(expected_encoding(&input(COMMON_SIZE, true, 1), 1).len())
}

#[derive(Debug, Clone)]
enum Op {
    /// Append events whose call ids have these lengths.
    Append { sizes: Vec<usize>, replayable: bool, checkpoint: Option<(usize, u8)> },
    /// Several appends committed as one group (the writer's path).
    Group(Vec<AppendArgs>),
    /// Read from `after` (a fraction of last_seq + 2) with these limits.
    Read { after: u16, max_events: usize, max_bytes: usize },
    /// Ack up to a fraction of last_seq + 3.
    Ack { up_to: u16 },
    /// Kill the process: open a copy of the disk as it is.
    Crash,
    /// Close and open again.
    Reopen,
}

/// Call-id lengths, replayable, checkpoint (index, value byte).
type AppendArgs = (Vec<usize>, bool, Option<(usize, u8)>);

fn append_args() -> impl Strategy<Value = AppendArgs> {
    (
        proptest::collection::vec(prop_oneof![3 => Just(COMMON_SIZE), 1 => 0usize..60], 0..16),
        any::<bool>(),
        proptest::option::of((0..CHECKPOINTS.len(), any::<u8>())),
    )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => append_args().prop_map(|(sizes, replayable, checkpoint)| Op::Append { sizes, replayable, checkpoint }),
        2 => proptest::collection::vec(append_args(), 1..4).prop_map(Op::Group),
        3 => (any::<u16>(), 0usize..8, prop_oneof![Just(usize::MAX), 0usize..400])
            .prop_map(|(after, max_events, max_bytes)| Op::Read { after, max_events, max_bytes }),
        3 => any::<u16>().prop_map(|up_to| Op::Ack { up_to }),
        1 => Just(Op::Crash),
        1 => Just(Op::Reopen),
    ]
}

fn scale(fraction: u16, top: u64) -> u64 {
    (u64::from(fraction) * (top + 1)) >> 16
}

fn input(size: usize, replayable: bool, n: u64) -> SpoolInput {
    SpoolInput {
        source: SourceKind::AsteriskAmi,
        replayable,
        event: FeedEvent {
            call_id: "c".repeat(size),
            leg_id: format!("leg-{n:04}"),
            source_time: None,
            kind: EventKind::QueueStart,
        },
        captured: CaptureTime { wall: 1_700_000_000_000_000_000 + n as i64, monotonic: 1_000 + n, clock_synced: true },
    }
}

/// The bytes the spool must store for `input` at `seq`.
fn expected_encoding(input: &SpoolInput, seq: u64) -> Vec<u8> {
    let event =
        input.event.clone().into_event(EventId { agent_id: AGENT.into(), seq }, SITE, input.source, input.captured);
    pb::Event::from(event).encode_to_vec()
}

/// What the spool should hold.
#[derive(Debug, Default)]
struct Model {
    events: VecDeque<(u64, Vec<u8>)>,
    bytes: u64,
    limit: u64,
    next_seq: u64,
    acked: u64,
    checkpoints: BTreeMap<String, Vec<u8>>,
    dropped: u64,
    refused: u64,
}

impl Model {
    fn new() -> Self {
        Self { next_seq: 1, limit: limit(), ..Self::default() }
    }

    fn append(&mut self, inputs: &[SpoolInput], checkpoint: Option<(&str, &[u8])>) -> AppendOutcome {
        let first = self.next_seq;
        let encoded: Vec<Vec<u8>> = inputs.iter().zip(first..).map(|(i, seq)| expected_encoding(i, seq)).collect();
        let costs: Vec<u64> = encoded.iter().map(|e| entry_cost(e.len())).collect();
        let total: u64 = costs.iter().sum();
        let mut keep_from = 0;
        if total > 0 && self.bytes + total > self.limit {
            if inputs.iter().all(|i| i.replayable) {
                // Larger than the whole cap: admitted into an empty spool only.
                if self.bytes > 0 {
                    self.refused += 1;
                    return AppendOutcome::Full;
                }
            } else {
                self.make_room(&costs, total, &mut keep_from);
            }
        }
        self.store(inputs, encoded, costs, keep_from, checkpoint, first)
    }

    fn make_room(&mut self, costs: &[u64], total: u64, keep_from: &mut usize) {
        let mut own = total;
        while own > self.limit {
            own -= costs[*keep_from];
            *keep_from += 1;
        }
        self.dropped += *keep_from as u64;
        while self.bytes + own > self.limit {
            let (_, old) = self.events.pop_front().expect("something to drop");
            self.bytes -= entry_cost(old.len());
            self.dropped += 1;
        }
    }

    fn store(
        &mut self,
        inputs: &[SpoolInput],
        encoded: Vec<Vec<u8>>,
        costs: Vec<u64>,
        keep_from: usize,
        checkpoint: Option<(&str, &[u8])>,
        first: u64,
    ) -> AppendOutcome {
        for ((seq, bytes), cost) in (first..).zip(encoded).zip(costs).skip(keep_from) {
            self.bytes += cost;
            self.events.push_back((seq, bytes));
        }
        self.next_seq = first + inputs.len() as u64;
        if let Some((k, v)) = checkpoint {
            self.checkpoints.insert(k.to_owned(), v.to_vec());
        }
        AppendOutcome::Stored { first_seq: first, last_seq: self.next_seq - 1 }
    }

    fn read(&self, after: u64, max_events: usize, max_bytes: usize) -> Vec<(u64, Vec<u8>)> {
        let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut used = 0;
        for (seq, bytes) in self.events.iter().filter(|(s, _)| *s > after) {
            if out.len() >= max_events || (!out.is_empty() && used + bytes.len() > max_bytes) {
                break;
            }
            used += bytes.len();
            out.push((*seq, bytes.clone()));
        }
        out
    }

    fn ack(&mut self, up_to: u64) -> u64 {
        if up_to <= self.acked {
            return 0;
        }
        let before = self.events.len();
        while self.events.front().is_some_and(|(s, _)| *s <= up_to) {
            let (_, old) = self.events.pop_front().expect("front");
            self.bytes -= entry_cost(old.len());
        }
        self.acked = up_to;
        self.next_seq = self.next_seq.max(up_to + 1);
        (before - self.events.len()) as u64
    }

    fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }
}

struct Harness {
    dir: tempfile::TempDir,
    cfg: SpoolConfig,
    spool: Option<Spool>,
    crashes: u32,
}

impl Harness {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = SpoolConfig {
            path: dir.path().join("spool"),
            max_bytes: limit() + RESERVE,
            reserve_bytes: RESERVE,
            ..SpoolConfig::default()
        };
        let spool = Some(Spool::open(&cfg, AGENT, SITE).expect("open").spool);
        Self { dir, cfg, spool, crashes: 0 }
    }

    fn spool(&self) -> &Spool {
        self.spool.as_ref().expect("open")
    }

    fn crash(&mut self) {
        self.crashes += 1;
        let copy = self.dir.path().join(format!("crash-{}", self.crashes));
        copy_dir(&self.cfg.path, &copy);
        self.spool = None;
        self.cfg.path = copy;
        self.reopen();
    }

    fn reopen(&mut self) {
        self.spool = None;
        wait_unlocked(&self.cfg.path);
        let opened = Spool::open(&self.cfg, AGENT, SITE).expect("reopen");
        assert!(opened.quarantined.is_none(), "a crash never corrupts a synced store");
        self.spool = Some(opened.spool);
    }
}

/// Waits until no sled instance holds the store's lock. A dropped `Spool`
/// releases it only when sled's background threads have finished, and
/// `Durable::open` treats a held lock as corruption and quarantines the
/// store (reported to the lead), so a test that reopens must wait.
#[allow(clippy::incompatible_msrv)]
fn wait_unlocked(dir: &Path) {
    let Ok(file) = std::fs::File::options().read(true).write(true).open(dir.join("db")) else { return };
    for _ in 0..1000 {
        if file.try_lock().is_ok() {
            let _ = file.unlock();
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    panic!("{} stays locked", dir.display());
}

fn copy_dir(from: &Path, to: &PathBuf) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("readdir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

fn check(spool: &Spool, model: &Model) -> Result<(), TestCaseError> {
    let held = spool.read_batch(0, usize::MAX, usize::MAX).expect("read all");
    let expected: Vec<(u64, Vec<u8>)> = model.events.iter().cloned().collect();
    prop_assert_eq!(held, expected, "unacked events");
    let stats = spool.stats();
    prop_assert_eq!(stats.last_seq, model.last_seq());
    prop_assert_eq!(stats.acked_seq, model.acked);
    prop_assert_eq!(stats.depth, model.events.len() as u64);
    prop_assert_eq!(stats.bytes, model.bytes);
    prop_assert_eq!(stats.first_seq, model.events.front().map_or(0, |e| e.0));
    prop_assert_eq!(stats.decode_errors_total, 0);
    for name in CHECKPOINTS {
        prop_assert_eq!(spool.checkpoint(name).expect("checkpoint"), model.checkpoints.get(name).cloned());
    }
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut h = Harness::new();
    let mut model = Model::new();
    let mut n = 0u64;
    // Session counters reset when the spool is opened again.
    let (mut dropped_base, mut refused_base) = (0, 0);
    for op in ops {
        match op {
            Op::Append { sizes, replayable, checkpoint } => {
                let inputs: Vec<SpoolInput> = sizes
                    .iter()
                    .map(|&s| {
                        n += 1;
                        input(s, replayable, n)
                    })
                    .collect();
                let cp = checkpoint.map(|(k, v)| (CHECKPOINTS[k], vec![v; usize::from(v % 4)]));
                let cp_ref = cp.as_ref().map(|(k, v)| (*k, v.as_slice()));
                let expected = model.append(&inputs, cp_ref);
                let got = h.spool().append(inputs, cp_ref).expect("append");
                prop_assert_eq!(got, expected);
                let stats = h.spool().stats();
                prop_assert_eq!(stats.dropped_total, model.dropped - dropped_base);
                prop_assert_eq!(stats.full_refusals_total, model.refused - refused_base);
            }
            Op::Group(requests) => {
                let mut expected = Vec::new();
                let mut group = Vec::new();
                for (sizes, replayable, checkpoint) in requests {
                    let inputs: Vec<SpoolInput> = sizes
                        .iter()
                        .map(|&s| {
                            n += 1;
                            input(s, replayable, n)
                        })
                        .collect();
                    let cp = checkpoint.map(|(k, v)| (CHECKPOINTS[k].to_owned(), vec![v; usize::from(v % 4)]));
                    expected.push(model.append(&inputs, cp.as_ref().map(|(k, v)| (k.as_str(), v.as_slice()))));
                    group.push((inputs, cp));
                }
                prop_assert_eq!(h.spool().append_group(group).expect("group"), expected);
                let stats = h.spool().stats();
                prop_assert_eq!(stats.dropped_total, model.dropped - dropped_base);
                prop_assert_eq!(stats.full_refusals_total, model.refused - refused_base);
            }
            Op::Read { after, max_events, max_bytes } => {
                let after = scale(after, model.last_seq() + 1);
                let got = h.spool().read_batch(after, max_events, max_bytes).expect("read");
                prop_assert_eq!(got, model.read(after, max_events, max_bytes));
                // The range covers every seq up to its end, events or not.
                if let Some(range) = h.spool().read_range(after, max_events, max_bytes).expect("range") {
                    prop_assert_eq!(range.first_seq, after + 1);
                    let read = model.read(after, max_events, max_bytes);
                    let limited =
                        read.len() >= max_events || model.events.iter().filter(|e| e.0 > after).count() > read.len();
                    let end = if limited { read.last().map_or(model.last_seq(), |e| e.0) } else { model.last_seq() };
                    prop_assert_eq!(range.last_seq, end);
                    prop_assert!(range.events.iter().all(|e| e.0 >= range.first_seq && e.0 <= range.last_seq));
                } else {
                    prop_assert!(max_events == 0 || after >= model.last_seq());
                }
            }
            Op::Ack { up_to } => {
                let up_to = scale(up_to, model.last_seq() + 3);
                let expected = model.ack(up_to);
                prop_assert_eq!(h.spool().ack(up_to).expect("ack"), expected);
            }
            Op::Crash => {
                h.crash();
                (dropped_base, refused_base) = (model.dropped, model.refused);
            }
            Op::Reopen => {
                h.reopen();
                (dropped_base, refused_base) = (model.dropped, model.refused);
            }
        }
        check(h.spool(), &model)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/spool_model.txt"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn spool_matches_its_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(ops)?;
    }
}

/// A fixed sequence through every rule, kept as a readable regression.
#[test]
fn fixed_sequence_through_every_rule() {
    let ops = vec![
        Op::Append { sizes: vec![10, 20, 30], replayable: true, checkpoint: Some((0, 7)) },
        Op::Read { after: 0, max_events: 2, max_bytes: usize::MAX },
        Op::Ack { up_to: 20_000 },
        Op::Crash,
        Op::Append { sizes: vec![59; 5], replayable: true, checkpoint: Some((1, 1)) },
        Op::Append { sizes: vec![59; 5], replayable: true, checkpoint: Some((1, 2)) },
        Op::Append { sizes: vec![59; 5], replayable: true, checkpoint: Some((1, 3)) },
        Op::Append { sizes: vec![59; 5], replayable: false, checkpoint: None },
        Op::Append { sizes: vec![59; 5], replayable: false, checkpoint: None },
        Op::Reopen,
        Op::Ack { up_to: u16::MAX },
        Op::Append { sizes: vec![1], replayable: true, checkpoint: None },
        Op::Crash,
    ];
    if let Err(e) = run(ops) {
        panic!("{e}");
    }
}
