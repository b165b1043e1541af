//! The durable spool: every event the agent captures waits here, in sled,
//! until the aggregator has acknowledged it.
//!
//! Sources hand events to the spool (directly with [`Spool::append`], or
//! through the group-commit writer of [`spawn_writer`]); the spool gives each
//! one its sequence number, encodes it once as a [`pb::Event`] and keeps those
//! bytes until [`Spool::ack`]. The uplink reads them back with
//! [`Spool::read_range`] (or [`Spool::read_batch`]) and re-sends exactly the
//! same bytes after every reconnect.
//!
//! # sled key layout
//!
//! One sled tree (the default one), so that one [`sled::Batch`] is atomic over
//! everything a commit touches. Keys start with a one-byte tag:
//!
//! | key | value |
//! |---|---|
//! | `b'g'` + seq (u64 big-endian, 9 bytes in all) | a **group**: events of one commit, the first at seq, as a frame (below) |
//! | `b"m:next_seq"` | u64 big-endian: the next seq to assign (highest ever assigned + 1) |
//! | `b"m:acked_seq"` | u64 big-endian: highest seq acknowledged by the aggregator |
//! | `b"m:agent_id"` | UTF-8: the agent identity the stored events carry |
//! | `b"m:counts"` | four u64 big-endian: depth, bytes, and the `m:next_seq` and `m:acked_seq` they were counted at |
//! | `b'c'` + name | a source checkpoint (opaque bytes, e.g. a queue_log offset) |
//!
//! A group frame is a version byte (1), then, for each event in seq order,
//! the gap to the previous event's seq, the length of its encoding (both
//! LEB128 varints) and the encoding: the event's `pb::Event` protobuf,
//! `agent_id`, `seq` and `site` set. The first event's seq is the key's (gap
//! 0); the next is the previous + 1 + gap, a gap being seqs the cap dropped
//! inside the commit. Groups never overlap, and big-endian seqs make sled's
//! key order the seq order: the oldest event is in the first `g` key, and a
//! read is a range scan from the group holding its first seq.
//!
//! Why groups: sled 0.34 spends about 7 µs per key inserted, whatever its
//! size, so one key per event held the spool near 110k events/s. A commit
//! writes its events as groups of at most [`GROUP_TARGET_BYTES`] of frame (an
//! event larger than that gets a group of its own), not as one value: sled
//! writes any log item above a quarter of its 512 KiB segment to a separate
//! blob file which it never fsyncs, outside what [`Durable::sync`] makes
//! durable, and that item may be a whole leaf node (up to 17 values) when
//! sled rewrites one. Values of 4 KiB keep every leaf far below it.
//!
//! A group is written once, then only:
//! - deleted by the [`ack`](Spool::ack) that covers all of it. A group the
//!   ack covers only partly stays until a later ack covers the rest; its
//!   events at or below `m:acked_seq` are ignored (never read again, not
//!   counted in `depth` or `bytes`).
//! - cut by the byte cap (below): the oldest group loses its oldest events
//!   and is rewritten under the key of the first one kept, in the batch of
//!   the commit that needed the room.
//!
//! # Opening without a scan
//!
//! `depth` and `bytes` are kept in `m:counts`, written in the batch of every
//! commit and every ack that changes them, so opening reads a few meta keys
//! instead of every group. The key carries the `m:next_seq` and
//! `m:acked_seq` it was counted at: every commit that stores or drops
//! events moves `m:next_seq` and every ack moves `m:acked_seq`, so a store
//! written meanwhile by an agent that does not keep the counts (an older
//! version, or a migration) no longer matches them, and open then counts by
//! scanning every group, as it always did before, and rewrites the key.
//! Why it matters: sled 0.34 keeps every page a scan touches in memory (its
//! cache evicts per shard, and only once a shard has queued 64 accesses), so
//! the scan of a 1M-event backlog kept about 100 MiB resident for the
//! agent's lifetime.
//!
//! A spool of the first layout, one key `b'e'` + seq per event holding its
//! encoding, is migrated when opened: chunks of `e` keys are replaced by
//! groups of the same bytes, one atomic batch per chunk, so a crash during
//! the migration leaves a mix that the next open finishes. An agent older
//! than groups does not see them: downgrading loses the spooled events.
//!
//! # Sequence numbers
//!
//! Strictly increasing and never reused, even after everything was acked and
//! the spool reopened: `m:next_seq` is written in the same batch as the
//! events that consumed the seqs. A request refused with
//! [`AppendOutcome::Full`] consumes no seq. Seqs of events dropped under the
//! byte cap are consumed and never stored: the uplink's batch ranges cover
//! them without an event, which the wire contract defines as "declared lost".
//! An [`ack`](Spool::ack) above the highest seq ever assigned (the aggregator
//! holds more than this spool: it was lost or quarantined) raises
//! `m:next_seq` above it, so numbering continues past what the aggregator
//! already holds.
//!
//! # Commits and durability
//!
//! A commit encodes the events of one or more requests, then writes events,
//! `m:next_seq` and every request's checkpoint in **one** `sled::Batch`, then
//! calls [`Durable::sync`] (sled flush plus a real `fdatasync`). Only then is
//! the outcome returned ([`AppendOutcome::Stored`]) and the new last seq
//! published to readers ([`Spool::notify`]). Because a checkpoint is in the
//! batch of the events it covers, a crash either keeps both or neither: a
//! replaying source restarts from its checkpoint without loss, and a
//! duplicate is impossible because the events were not kept either.
//! Readers never see an event before it is durable, so the aggregator never
//! acks a seq the agent could forget (and reuse) after a power cut.
//!
//! The group-commit writer ([`spawn_writer`]) gathers requests for at most
//! `flush_interval` or `flush_events` events, commits them as one batch and
//! one sync, then answers each request: one fsync for many sources.
//!
//! # The ack protocol
//!
//! The uplink reads from the aggregator's `Welcome.resume_after_seq` S:
//! [`Spool::read_range`]`(S, ..)` gives the range `S+1..=L` to send as one
//! `Batch` and the events it still holds in it (a gap is a dropped or
//! corrupt event: declared lost). The aggregator answers `Ack{up_to_seq}`,
//! cumulative; [`Spool::ack`] deletes every group wholly up to it (the
//! events of a partly acked one are ignored from then on), persists
//! `m:acked_seq` in the same batch and syncs. `ack` never goes backwards (a
//! lower or equal value is a no-op returning 0) and nothing is deleted that
//! was not acked, except by the byte cap below. A lost ack only means events
//! are sent again, byte-identical, and the aggregator drops the duplicates.
//!
//! # Byte cap
//!
//! The spool counts *logical* bytes: per event, its encoding plus 9 (its
//! key in the first layout; in a group, a few bytes of framing and its share
//! of the group's key, so the same cap holds about the same events). Events
//! may use `max_bytes - reserve_bytes`; the reserve is
//! headroom that is never filled by events, so that meta writes, checkpoints
//! and the deletes of an ack (sled writes tombstones) still fit when the
//! spool is full. sled's files are larger than the logical bytes (log
//! segments, page overhead, space not yet reclaimed): size the filesystem for
//! about three times `max_bytes`.
//!
//! When a request does not fit:
//! - a request whose inputs are all `replayable` (the source can read them
//!   again, e.g. a queue_log file from its checkpoint) is refused with
//!   [`AppendOutcome::Full`]: nothing stored, no seq used, checkpoint not
//!   advanced. The source pauses and retries; `full_refusals_total` counts
//!   refusals and `SpoolFull` is logged at WARN once per episode. A
//!   replayable request bigger than the whole cap is admitted when the spool
//!   is empty (so a source never stalls for good); the spool then exceeds
//!   the cap by that one request.
//! - a request with any non-replayable input (a socket: the PBX will not say
//!   it again) is stored, and the spool drops its **oldest** unacked events
//!   until it fits, exactly as many as needed (the oldest group is cut, see
//!   above; if the request alone exceeds the cap, its own oldest events go
//!   too). `dropped_total` counts them and `EventsDropped` is
//!   logged at ERROR once per episode.
//!
//! An episode ends when acks bring the spool under 90 % of the cap.
//! A request is the unit of policy: a source sends requests of one kind, and
//! a mixed request is treated as non-replayable (storing is never wrong).
//!
//! # Exactly when data can be lost
//!
//! 1. **Power cut before a group commit is synced.** Events a source
//!    accepted (read from a socket) but whose commit has not returned
//!    `Stored` are in memory only. A non-replayable source loses them (at
//!    most `flush_interval` plus one sync of events, plus whatever the
//!    source had buffered); a replayable source re-reads them from its
//!    checkpoint. A process crash (kill, panic) loses the same window, no
//!    more.
//! 2. **Byte cap reached with non-replayable input** (aggregator unreachable
//!    for long): oldest events are dropped, counted, logged, and declared
//!    lost to the aggregator by the gap they leave.
//! 3. **A corrupt store.** If sled cannot open the directory, [`Durable`]
//!    moves it aside to `<path>.quarantine-<secs>` and the spool starts
//!    empty (see [`SpoolStats::quarantined`]); the events in it are not
//!    delivered. The new spool numbers from 1, so until the uplink's first
//!    `Welcome` raises numbering (through [`Spool::ack`]) seqs may repeat
//!    ones the aggregator holds, and it would drop those events as
//!    duplicates: an operator should look at every quarantine. sled's own
//!    recovery of a torn log tail keeps a prefix of the commits: whole
//!    batches only, so events and checkpoints stay consistent.
//! 4. **An entry that no longer decodes** is skipped on read, counted in
//!    `decode_errors_total` and logged; its seq is then declared lost. A
//!    group whose frame does not parse loses all its events: it is held,
//!    counted and acked as one entry at its key's seq, and every seq it held
//!    is declared lost. (sled checks a CRC per log message, so this takes a
//!    bug or a hand-edited store, not a torn write.)
//! 5. A failed `fdatasync` returns an error to the requests of that commit;
//!    their events may nevertheless have reached the disk, so a retry can
//!    duplicate them under new seqs. The agent should treat it as fatal.
//!
//! Everything `Stored` before a power cut, and not yet acked, is delivered.
//! The acked events of a partly acked group still take disk space (at most
//! one group, [`GROUP_TARGET_BYTES`]) but are never delivered again.
//!
//! # Blocking
//!
//! Every [`Spool`] method does disk I/O and may wait for an fsync: call them
//! from `spawn_blocking` (or a dedicated thread) in async code. The writer
//! of [`spawn_writer`] does so itself.

mod writer;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use callkpi_core::event::{EventId, SourceKind};
use callkpi_durable::frame::{self, Entry};
use callkpi_durable::{DEFAULT_CACHE_BYTES, Durable, DurableError};
use callkpi_feeds::{CaptureTime, FeedEvent};
use callkpi_proto::pb;
use prost::Message as _;
use serde::Deserialize;
use tokio::sync::watch;

pub use writer::{SpoolHandle, spawn_writer};

/// Tag of group keys.
const GROUP_TAG: u8 = b'g';
/// Tag of the per-event keys of the first layout, migrated at open.
const LEGACY_EVENT_TAG: u8 = b'e';
/// Tag of checkpoint keys.
const CHECKPOINT_TAG: u8 = b'c';
/// Length of a group (or legacy event) key: tag + big-endian seq.
const SEQ_KEY_LEN: usize = 9;
/// Logical bytes counted per event on top of its encoding.
const EVENT_OVERHEAD: usize = 9;
/// Largest group frame a commit writes, unless one event alone is larger:
/// keeps sled's leaf nodes (up to 17 values) far below its blob threshold
/// (about 128 KiB), see the module docs.
pub const GROUP_TARGET_BYTES: usize = 4096;
/// Legacy event keys migrated per sled batch at open.
const MIGRATE_KEYS_PER_BATCH: usize = 1024;
/// Next seq to assign.
const META_NEXT_SEQ: &[u8] = b"m:next_seq";
/// Highest acked seq.
const META_ACKED_SEQ: &[u8] = b"m:acked_seq";
/// Agent identity of the stored events.
const META_AGENT_ID: &[u8] = b"m:agent_id";
/// Depth and bytes, and the next and acked seqs they were counted at.
const META_COUNTS: &[u8] = b"m:counts";

/// Spool settings (the `[spool]` table of the agent's configuration).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// sled directory. A corrupt one is moved aside to
    /// `<path>.quarantine-<unix seconds>`, so its parent must be writable.
    pub path: PathBuf,
    /// sled page cache; small, because appliances have little RAM.
    pub cache_bytes: u64,
    /// Byte cap of the spooled events (logical bytes: key + encoding per
    /// event); sled's files take more, see the module docs.
    pub max_bytes: u64,
    /// Part of `max_bytes` events never use, kept for acks, meta writes and
    /// checkpoints when the spool is full.
    pub reserve_bytes: u64,
    /// Longest time the writer gathers requests before one commit; the
    /// window of accepted-but-not-durable events (`flush_interval_ms` in TOML).
    #[serde(rename = "flush_interval_ms", with = "duration_ms")]
    pub flush_interval: Duration,
    /// Events after which the writer commits without waiting longer.
    pub flush_events: usize,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("/var/lib/callkpi/agent/spool"),
            cache_bytes: DEFAULT_CACHE_BYTES,
            max_bytes: 256 * 1024 * 1024,
            reserve_bytes: 1024 * 1024,
            flush_interval: Duration::from_millis(5),
            flush_events: 512,
        }
    }
}

impl SpoolConfig {
    /// Checks the settings that would make the spool unusable.
    ///
    /// # Errors
    /// [`SpoolError::InvalidConfig`] naming the problem.
    pub fn validate(&self) -> Result<(), SpoolError> {
        if self.reserve_bytes >= self.max_bytes {
            return Err(SpoolError::InvalidConfig { reason: "reserve_bytes must be below max_bytes" });
        }
        if self.flush_events == 0 {
            return Err(SpoolError::InvalidConfig { reason: "flush_events must be at least 1" });
        }
        if self.path.as_os_str().is_empty() {
            return Err(SpoolError::InvalidConfig { reason: "path must not be empty" });
        }
        Ok(())
    }

    /// Bytes events may use: `max_bytes - reserve_bytes`.
    pub fn event_bytes_limit(&self) -> u64 {
        self.max_bytes.saturating_sub(self.reserve_bytes)
    }
}

/// Durations as whole milliseconds in configuration files.
mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// Errors of the spool.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// Opening or syncing the store failed.
    #[error(transparent)]
    Durable(#[from] DurableError),
    /// A sled operation failed.
    #[error("spool {what}: {source}")]
    Sled {
        /// What was being done.
        what: &'static str,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// The configuration cannot work.
    #[error("invalid spool configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: &'static str,
    },
    /// The spool holds unacked events of another agent identity; sending
    /// them under this one would be refused by the aggregator.
    #[error("spool holds {depth} unacked events of agent {stored:?}, configured agent is {configured:?}")]
    ForeignAgent {
        /// Identity in the spool.
        stored: String,
        /// Identity configured now.
        configured: String,
        /// Unacked events held.
        depth: u64,
    },
    /// The group-commit writer has stopped (shutdown), the request was not stored.
    #[error("spool writer has stopped")]
    WriterClosed,
    /// The group-commit writer panicked while committing; the outcome is unknown.
    #[error("spool writer panicked during a commit")]
    WriterPanicked,
    /// A group commit failed; every request of the group gets this error.
    #[error("group commit failed: {0}")]
    GroupCommit(#[source] Arc<SpoolError>),
}

impl SpoolError {
    fn sled(what: &'static str) -> impl FnOnce(sled::Error) -> SpoolError {
        move |source| SpoolError::Sled { what, source }
    }
}

/// One event handed to the spool.
#[derive(Debug, Clone, PartialEq)]
pub struct SpoolInput {
    /// Feed that produced it.
    pub source: SourceKind,
    /// Whether the source can produce it again after a restart (from a
    /// checkpoint); decides the policy when the spool is full.
    pub replayable: bool,
    /// The event, before it has an identity.
    pub event: FeedEvent,
    /// When the agent read it.
    pub captured: CaptureTime,
}

/// Result of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Durable. The events got `first_seq..=last_seq`, in input order; an
    /// empty request (checkpoint only) gets an empty range, `first_seq =
    /// last_seq + 1`. Some of the range may already have been dropped by the
    /// cap when the request itself exceeded it.
    Stored {
        /// Seq of the first input.
        first_seq: u64,
        /// Seq of the last input.
        last_seq: u64,
    },
    /// The spool is full and every input was replayable: nothing stored, no
    /// seq used, checkpoint not advanced. Pause the source and retry.
    Full,
}

/// A snapshot of the spool's state, for metrics, heartbeats and `callkpi` status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SpoolStats {
    /// Unacked events held.
    pub depth: u64,
    /// Logical bytes they take (key + encoding each).
    pub bytes: u64,
    /// Cap of `bytes`, reserve included.
    pub max_bytes: u64,
    /// Lowest seq held, 0 when empty.
    pub first_seq: u64,
    /// Highest seq ever assigned and durable, 0 when none.
    pub last_seq: u64,
    /// Highest seq acknowledged by the aggregator.
    pub acked_seq: u64,
    /// `captured_at_ns` of the event at `first_seq`, 0 when empty: how far
    /// behind the uplink is.
    pub oldest_captured_at_ns: i64,
    /// Events dropped under the cap since the spool was opened.
    pub dropped_total: u64,
    /// Requests refused with [`AppendOutcome::Full`] since the spool was opened.
    pub full_refusals_total: u64,
    /// Stored entries skipped on read because they did not decode.
    pub decode_errors_total: u64,
    /// Where a corrupt previous spool was moved when this one was opened.
    pub quarantined: Option<PathBuf>,
}

/// What [`Spool::inspect`] read.
#[derive(Debug, Clone)]
pub struct SpoolInspection {
    /// Identity the held events carry.
    pub agent_id: String,
    /// Counts and seqs.
    pub stats: SpoolStats,
    /// Source checkpoints: name and opaque value.
    pub checkpoints: Vec<(String, Vec<u8>)>,
}

/// What [`Spool::open`] found.
#[derive(Debug)]
pub struct SpoolOpened {
    /// The spool.
    pub spool: Spool,
    /// Where a corrupt previous spool was moved, if it was.
    pub quarantined: Option<PathBuf>,
}

/// A range of seqs to send as one `Batch`, and the events the spool still
/// holds in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRange {
    /// First seq of the range (`after_seq + 1`).
    pub first_seq: u64,
    /// Last seq of the range.
    pub last_seq: u64,
    /// `(seq, encoded pb::Event)` in seq order; a seq of the range missing
    /// here was dropped by the cap or is corrupt: declared lost.
    pub events: Vec<(u64, Vec<u8>)>,
}

/// The durable spool; cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Durable,
    agent_id: String,
    site: String,
    /// Bytes events may use.
    limit: u64,
    max_bytes: u64,
    quarantined: Option<PathBuf>,
    /// Serialises commits and acks (seq assignment and byte accounting).
    state: Mutex<WriteState>,
    /// Highest seq durable and visible to readers.
    last_seq: AtomicU64,
    acked_seq: AtomicU64,
    depth: AtomicU64,
    bytes: AtomicU64,
    dropped_total: AtomicU64,
    full_refusals_total: AtomicU64,
    decode_errors_total: AtomicU64,
    notify: watch::Sender<u64>,
}

#[derive(Debug)]
struct WriteState {
    next_seq: u64,
    acked_seq: u64,
    depth: u64,
    bytes: u64,
    /// In a drop episode (logged once).
    dropping: bool,
    episode_dropped: u64,
    /// In a refusal episode (logged once).
    refusing: bool,
    episode_refused: u64,
}

/// One source's request: its events and the checkpoint `(name, value)`
/// they advance, committed together.
pub type AppendRequest = (Vec<SpoolInput>, Option<(String, Vec<u8>)>);

fn seq_key(tag: u8, seq: u64) -> [u8; SEQ_KEY_LEN] {
    let mut k = [0u8; SEQ_KEY_LEN];
    k[0] = tag;
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn group_key(seq: u64) -> [u8; SEQ_KEY_LEN] {
    seq_key(GROUP_TAG, seq)
}

fn parse_seq_key(tag: u8, key: &[u8]) -> Option<u64> {
    match key {
        [t, rest @ ..] if *t == tag => Some(u64::from_be_bytes(rest.try_into().ok()?)),
        _ => None,
    }
}

fn checkpoint_key(name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + name.len());
    k.push(CHECKPOINT_TAG);
    k.extend_from_slice(name.as_bytes());
    k
}

fn read_u64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

/// The value of `m:counts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    depth: u64,
    bytes: u64,
    next_seq: u64,
    acked_seq: u64,
}

impl Counts {
    fn encode(&self) -> [u8; 32] {
        let mut v = [0u8; 32];
        for (chunk, n) in v.chunks_exact_mut(8).zip([self.depth, self.bytes, self.next_seq, self.acked_seq]) {
            chunk.copy_from_slice(&n.to_be_bytes());
        }
        v
    }

    fn decode(v: &[u8]) -> Option<Counts> {
        let v: &[u8; 32] = v.try_into().ok()?;
        let n = |i: usize| read_u64(&v[i * 8..(i + 1) * 8]);
        Some(Counts { depth: n(0)?, bytes: n(1)?, next_seq: n(2)?, acked_seq: n(3)? })
    }
}

/// Logical bytes of one stored event (the byte cap's unit).
pub fn entry_cost(encoded_len: usize) -> u64 {
    (EVENT_OVERHEAD + encoded_len) as u64
}

// === Group frames (format: `callkpi_durable::frame`) ===

/// Builds group frames from events in seq order, closing a frame at
/// [`GROUP_TARGET_BYTES`].
struct Framer(frame::Builder);

impl Default for Framer {
    fn default() -> Self {
        Self(frame::Builder::new(GROUP_TARGET_BYTES))
    }
}

impl Framer {
    fn push(&mut self, seq: u64, event: &[u8]) {
        self.0.push(seq, event);
    }

    fn close(&mut self) {
        self.0.close();
    }

    /// Every frame under its group key.
    fn into_frames(self) -> Vec<([u8; SEQ_KEY_LEN], Vec<u8>)> {
        self.0.finish().into_iter().map(|(first, frame)| (group_key(first), frame)).collect()
    }

    /// Adds every frame to `batch`; returns how many.
    fn write_to(self, batch: &mut sled::Batch) -> usize {
        let frames = self.into_frames();
        let n = frames.len();
        for (key, frame) in frames {
            batch.insert(&key, frame);
        }
        n
    }
}

/// Logical bytes of one event of a stored group.
fn cost(e: &Entry) -> u64 {
    entry_cost(e.end - e.start)
}

/// A stored group, parsed.
struct StoredGroup {
    key: sled::IVec,
    value: sled::IVec,
    /// Never empty. A frame that does not parse is one entry at the key's
    /// seq spanning the whole value: counted, acked and dropped like one
    /// event, never returned.
    entries: Vec<Entry>,
    malformed: bool,
}

impl StoredGroup {
    /// `None` when the key is not a group key.
    fn parse(key: sled::IVec, value: sled::IVec) -> Option<StoredGroup> {
        let first = parse_seq_key(GROUP_TAG, &key)?;
        let (entries, malformed) = match frame::parse(first, &value) {
            Some(entries) => (entries, false),
            None => (vec![Entry { seq: first, start: 0, end: value.len() }], true),
        };
        Some(StoredGroup { key, value, entries, malformed })
    }

    fn first_seq(&self) -> u64 {
        self.entries[0].seq
    }

    fn last_seq(&self) -> u64 {
        self.entries[self.entries.len() - 1].seq
    }

    fn bytes(&self, e: &Entry) -> &[u8] {
        &self.value[e.start..e.end]
    }
}

/// Replaces the per-event keys of the first layout by groups of the same
/// bytes, one atomic batch per chunk; drops those at or below the ack and
/// malformed keys. Returns how many legacy keys were found (migrated or dropped).
fn migrate_legacy_events(tree: &sled::Tree, acked_seq: u64) -> Result<u64, SpoolError> {
    let range = || tree.range(seq_key(LEGACY_EVENT_TAG, 0)..=seq_key(LEGACY_EVENT_TAG, u64::MAX));
    let (mut migrated, mut stale, mut groups) = (0u64, 0u64, 0usize);
    loop {
        let mut batch = sled::Batch::default();
        let mut framer = Framer::default();
        let mut keys = 0;
        for item in range().take(MIGRATE_KEYS_PER_BATCH) {
            let (k, v) = item.map_err(SpoolError::sled("scanning legacy events"))?;
            match parse_seq_key(LEGACY_EVENT_TAG, &k) {
                Some(seq) if seq > acked_seq => {
                    // Groups never overlap, even with a store written back and
                    // forth by two agent versions.
                    if let Some(prev) = framer.0.open_last_seq().filter(|&prev| seq > prev + 1)
                        && tree.range(group_key(prev + 1)..group_key(seq)).next().is_some()
                    {
                        framer.close();
                    }
                    framer.push(seq, &v);
                    migrated += 1;
                }
                _ => stale += 1,
            }
            batch.remove(k);
            keys += 1;
        }
        if keys == 0 {
            break;
        }
        groups += framer.write_to(&mut batch);
        tree.apply_batch(batch).map_err(SpoolError::sled("migrating legacy events"))?;
    }
    if migrated + stale > 0 {
        tracing::info!(migrated, groups, stale, "Spool migrated from one key per event to groups.");
    }
    Ok(migrated + stale)
}

// === impl Spool ===

impl Spool {
    /// Opens (or creates) the spool at `cfg.path` for `agent_id` at `site`.
    ///
    /// A corrupt store is quarantined and an empty one started (see
    /// [`SpoolOpened::quarantined`]). Opening reads the counts kept in
    /// `m:counts`, or scans the stored events once to count them when those
    /// are missing or stale, and migrates a spool of the first layout (one
    /// key per event) to groups, see the module docs.
    ///
    /// # Errors
    /// An invalid configuration, a store that cannot be opened even empty,
    /// or [`SpoolError::ForeignAgent`] when unacked events of another agent
    /// identity are held.
    pub fn open(cfg: &SpoolConfig, agent_id: &str, site: &str) -> Result<SpoolOpened, SpoolError> {
        Self::open_as(cfg, Some(agent_id), site)
    }

    /// Opens a spool directory to report on it (`callkpi spool status`):
    /// under the identity it already holds, so nothing is refused. It takes
    /// the spool's lock: a running agent's spool answers
    /// [`SpoolError::Durable`] with [`DurableError::InUse`].
    ///
    /// # Errors
    /// As [`Spool::open`].
    pub fn inspect(path: &Path) -> Result<SpoolInspection, SpoolError> {
        let cfg = SpoolConfig { path: path.to_owned(), ..SpoolConfig::default() };
        let opened = Self::open_as(&cfg, None, "")?;
        let spool = opened.spool;
        let tree: &sled::Tree = spool.inner.store.db();
        let mut checkpoints = Vec::new();
        for item in tree.scan_prefix([CHECKPOINT_TAG]) {
            let (k, v) = item.map_err(SpoolError::sled("reading checkpoints"))?;
            checkpoints.push((String::from_utf8_lossy(&k[1..]).into_owned(), v.to_vec()));
        }
        Ok(SpoolInspection { agent_id: spool.agent_id().to_owned(), stats: spool.stats(), checkpoints })
    }

    fn open_as(cfg: &SpoolConfig, agent_id: Option<&str>, site: &str) -> Result<SpoolOpened, SpoolError> {
        cfg.validate()?;
        let opened = Durable::open(&cfg.path, cfg.cache_bytes)?;
        let store = opened.store;
        let tree: &sled::Tree = store.db();
        let meta = |k: &[u8]| -> Result<Option<u64>, SpoolError> {
            Ok(tree.get(k).map_err(SpoolError::sled("reading meta"))?.as_deref().and_then(read_u64))
        };
        let mut next_seq = meta(META_NEXT_SEQ)?.unwrap_or(1).max(1);
        let acked_seq = meta(META_ACKED_SEQ)?.unwrap_or(0);

        let migrated = migrate_legacy_events(tree, acked_seq)?;

        // The counts kept by commits and acks, when they are of this very
        // state; else count by scanning (see the module docs).
        let kept = tree.get(META_COUNTS).map_err(SpoolError::sled("reading meta"))?.as_deref().and_then(Counts::decode);
        let mut stale = sled::Batch::default();
        let mut stale_count = 0u64;
        let (depth, bytes) = match kept {
            Some(c) if migrated == 0 && c.next_seq == next_seq && c.acked_seq == acked_seq => (c.depth, c.bytes),
            _ => {
                // Count what is held; drop anything wholly at or below the ack
                // (a batch never leaves such groups, but a hand-edited store might).
                let (mut depth, mut bytes, mut max_seq) = (0u64, 0u64, 0u64);
                for item in tree.range(group_key(0)..=group_key(u64::MAX)) {
                    let (k, v) = item.map_err(SpoolError::sled("scanning events"))?;
                    match StoredGroup::parse(k.clone(), v) {
                        Some(group) if group.last_seq() > acked_seq => {
                            for e in group.entries.iter().filter(|e| e.seq > acked_seq) {
                                depth += 1;
                                bytes += cost(e);
                            }
                            max_seq = max_seq.max(group.last_seq());
                        }
                        _ => {
                            stale.remove(k);
                            stale_count += 1;
                        }
                    }
                }
                next_seq = next_seq.max(max_seq.saturating_add(1));
                tracing::info!(depth, "Spool counted by a scan (no counts of this state were kept).");
                (depth, bytes)
            }
        };
        next_seq = next_seq.max(acked_seq.saturating_add(1));

        let stored_agent = tree.get(META_AGENT_ID).map_err(SpoolError::sled("reading meta"))?;
        let stored_agent = stored_agent.as_deref().map(|v| String::from_utf8_lossy(v).into_owned());
        // Inspection takes the spool as it is.
        let agent_id = agent_id.map_or_else(|| stored_agent.clone().unwrap_or_default(), str::to_owned);
        let agent_id = agent_id.as_str();
        match stored_agent {
            Some(stored) if stored != agent_id && depth > 0 => {
                return Err(SpoolError::ForeignAgent { stored, configured: agent_id.to_owned(), depth });
            }
            Some(stored) if stored == agent_id => {}
            previous => {
                if let Some(previous) = previous {
                    tracing::info!(previous, agent_id, "Empty spool adopted by a new agent identity.");
                }
                stale.insert(META_AGENT_ID, agent_id.as_bytes());
            }
        }
        stale.insert(META_NEXT_SEQ, &next_seq.to_be_bytes());
        stale.insert(META_COUNTS, &Counts { depth, bytes, next_seq, acked_seq }.encode());
        tree.apply_batch(stale).map_err(SpoolError::sled("writing meta"))?;
        store.sync()?;
        if stale_count > 0 {
            tracing::warn!(stale_count, acked_seq, "Removed stored entries at or below the acked seq.");
        }

        let last_seq = next_seq - 1;
        tracing::info!(
            path = %cfg.path.display(),
            depth,
            bytes,
            last_seq,
            acked_seq,
            quarantined = opened.quarantined.as_ref().map(|p| p.display().to_string()),
            "Spool opened."
        );
        let (notify, _) = watch::channel(last_seq);
        let inner = Inner {
            store,
            agent_id: agent_id.to_owned(),
            site: site.to_owned(),
            limit: cfg.event_bytes_limit(),
            max_bytes: cfg.max_bytes,
            quarantined: opened.quarantined.clone(),
            state: Mutex::new(WriteState {
                next_seq,
                acked_seq,
                depth,
                bytes,
                dropping: false,
                episode_dropped: 0,
                refusing: false,
                episode_refused: 0,
            }),
            last_seq: AtomicU64::new(last_seq),
            acked_seq: AtomicU64::new(acked_seq),
            depth: AtomicU64::new(depth),
            bytes: AtomicU64::new(bytes),
            dropped_total: AtomicU64::new(0),
            full_refusals_total: AtomicU64::new(0),
            decode_errors_total: AtomicU64::new(0),
            notify,
        };
        Ok(SpoolOpened { spool: Spool { inner: Arc::new(inner) }, quarantined: opened.quarantined })
    }

    /// Stores `inputs` (one source's request) and `checkpoint` durably, as
    /// one commit with one sync.
    ///
    /// Seqs are assigned in input order; the events are encoded as
    /// `pb::Event` with this spool's `agent_id` and `site`. The checkpoint
    /// (`(name, value)`) is written in the same sled batch, so it is durable
    /// exactly when the events are. See the module docs for the byte cap.
    ///
    /// # Errors
    /// sled or fsync failures; nothing returned `Stored` then.
    pub fn append(
        &self,
        inputs: Vec<SpoolInput>,
        checkpoint: Option<(&str, &[u8])>,
    ) -> Result<AppendOutcome, SpoolError> {
        let request = (inputs, checkpoint.map(|(k, v)| (k.to_owned(), v.to_vec())));
        let mut outcomes = self.commit(vec![request])?;
        Ok(outcomes.pop().unwrap_or(AppendOutcome::Full))
    }

    /// Commits several requests as one sled batch and one sync; one outcome
    /// per request, in order. The group-commit writer's primitive.
    ///
    /// # Errors
    /// sled or fsync failures, for the whole group.
    pub fn append_group(&self, requests: Vec<AppendRequest>) -> Result<Vec<AppendOutcome>, SpoolError> {
        self.commit(requests)
    }

    fn lock(&self) -> MutexGuard<'_, WriteState> {
        // The state is only changed after sled accepted a batch, so it is
        // consistent even if a holder panicked.
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn encode(&self, seq: u64, input: SpoolInput) -> Vec<u8> {
        let id = EventId { agent_id: self.inner.agent_id.clone(), seq };
        let event = input.event.into_event(id, &self.inner.site, input.source, input.captured);
        pb::Event::from(event).encode_to_vec()
    }

    fn commit(&self, requests: Vec<AppendRequest>) -> Result<Vec<AppendOutcome>, SpoolError> {
        let inner = &*self.inner;
        let tree: &sled::Tree = inner.store.db();
        let mut st = self.lock();
        let mut building = Commit {
            disk: Some(tree.range(group_key(0)..=group_key(u64::MAX))),
            head: None,
            acked_seq: st.acked_seq,
            batch: sled::Batch::default(),
            pending: VecDeque::new(),
            dropped: 0,
            first_dropped: None,
        };
        let mut next_seq = st.next_seq;
        let mut bytes = st.bytes;
        let mut depth = st.depth;
        let mut refused = 0u64;
        let mut stored = 0u64;
        let mut outcomes = Vec::with_capacity(requests.len());

        for (inputs, checkpoint) in requests {
            let replayable = !inputs.is_empty() && inputs.iter().all(|i| i.replayable);
            let first_seq = next_seq;
            let encoded: Vec<Vec<u8>> =
                inputs.into_iter().zip(first_seq..).map(|(input, seq)| self.encode(seq, input)).collect();
            let costs: Vec<u64> = encoded.iter().map(|e| entry_cost(e.len())).collect();
            let total: u64 = costs.iter().sum();

            // The request's own events kept: all, unless it alone exceeds the cap.
            let mut keep_from = 0;
            if total > 0 && bytes + total > inner.limit {
                // A replayable request larger than the whole cap could never
                // fit and would stall its source forever: it is admitted into
                // an empty spool, which then exceeds the cap by that request.
                if replayable {
                    if bytes > 0 {
                        refused += 1;
                        outcomes.push(AppendOutcome::Full);
                        continue;
                    }
                } else {
                    let mut own = total;
                    while own > inner.limit {
                        own -= costs[keep_from];
                        keep_from += 1;
                    }
                    if keep_from > 0 {
                        building.first_dropped.get_or_insert(first_seq);
                        building.dropped += keep_from as u64;
                    }
                    if bytes + own > inner.limit {
                        let (freed_bytes, freed_events) = building.free(bytes + own - inner.limit)?;
                        bytes -= freed_bytes;
                        depth -= freed_events;
                    }
                }
            }

            let n = encoded.len() as u64;
            for (seq, (value, cost)) in (first_seq..).zip(encoded.into_iter().zip(costs)).skip(keep_from) {
                building.pending.push_back((seq, value, cost));
                bytes += cost;
                depth += 1;
            }
            stored += n - keep_from as u64;
            next_seq = first_seq + n;
            if let Some((name, value)) = checkpoint {
                building.batch.insert(checkpoint_key(&name), value);
            }
            outcomes.push(AppendOutcome::Stored { first_seq, last_seq: next_seq - 1 });
        }

        let dropped = building.dropped;
        let first_dropped = building.first_dropped;
        let mut batch = building.finish();
        if next_seq != st.next_seq {
            batch.insert(META_NEXT_SEQ, &next_seq.to_be_bytes());
            batch.insert(META_COUNTS, &Counts { depth, bytes, next_seq, acked_seq: st.acked_seq }.encode());
        }
        tree.apply_batch(batch).map_err(SpoolError::sled("applying a commit"))?;
        // sled holds the batch now: keep the accounting in step with it even
        // if the sync fails (seqs are consumed either way).
        st.next_seq = next_seq;
        st.bytes = bytes;
        st.depth = depth;
        inner.bytes.store(bytes, Ordering::Relaxed);
        inner.depth.store(depth, Ordering::Relaxed);
        if refused > 0 {
            inner.full_refusals_total.fetch_add(refused, Ordering::Relaxed);
            st.episode_refused += refused;
            if !st.refusing {
                st.refusing = true;
                tracing::warn!(
                    name: "SpoolFull",
                    bytes,
                    max_bytes = inner.max_bytes,
                    refused,
                    "Spool full; replayable sources pause until the aggregator acks."
                );
            }
        }
        if dropped > 0 {
            inner.dropped_total.fetch_add(dropped, Ordering::Relaxed);
            st.episode_dropped += dropped;
            if !st.dropping {
                st.dropping = true;
                tracing::error!(
                    name: "EventsDropped",
                    dropped,
                    first_dropped_seq = first_dropped.unwrap_or(0),
                    bytes,
                    max_bytes = inner.max_bytes,
                    "Spool full; dropping the oldest unacked events."
                );
            }
        }

        inner.store.sync()?;
        let last_seq = next_seq - 1;
        inner.last_seq.store(last_seq, Ordering::Release);
        inner.notify.send_replace(last_seq);
        tracing::debug!(
            name: "SpoolGroupCommitted",
            requests = outcomes.len(),
            stored,
            refused,
            dropped,
            last_seq,
            depth,
            bytes,
            "Spool group committed."
        );
        Ok(outcomes)
    }

    /// The value of checkpoint `name`, as last committed.
    ///
    /// # Errors
    /// sled failures.
    pub fn checkpoint(&self, name: &str) -> Result<Option<Vec<u8>>, SpoolError> {
        let tree: &sled::Tree = self.inner.store.db();
        Ok(tree.get(checkpoint_key(name)).map_err(SpoolError::sled("reading a checkpoint"))?.map(|v| v.to_vec()))
    }

    /// Up to `max_events` stored events with seq above `after_seq`, in seq
    /// order, as `(seq, encoded pb::Event)`, stopping before `max_bytes` of
    /// encodings would be exceeded (at least one event is returned when any
    /// is available and `max_events > 0`, even if it alone is larger).
    ///
    /// Only durable events are returned. Entries that do not decode are
    /// skipped and counted (`decode_errors_total`).
    ///
    /// # Errors
    /// sled failures.
    pub fn read_batch(
        &self,
        after_seq: u64,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, SpoolError> {
        Ok(self.read_range(after_seq, max_events, max_bytes)?.map(|r| r.events).unwrap_or_default())
    }

    /// Like [`read_batch`](Self::read_batch), with the seq range the events
    /// cover, ready for a `Batch{first_seq, last_seq}`: `first_seq` is
    /// `after_seq + 1`; `last_seq` is the last returned event's seq when a
    /// limit stopped the read, else the highest durable seq (so trailing
    /// dropped or corrupt seqs are declared lost too). `None` when no seq
    /// above `after_seq` was assigned yet (or `max_events` is 0).
    ///
    /// # Errors
    /// sled failures.
    pub fn read_range(
        &self,
        after_seq: u64,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Option<ReadRange>, SpoolError> {
        let last = self.last_seq();
        if max_events == 0 || after_seq >= last {
            return Ok(None);
        }
        // Events at or below the ack are gone, even in a partly acked group.
        let from = after_seq.max(self.acked_seq()) + 1;
        let mut events = Vec::new();
        let mut used = 0usize;
        let mut range_last = last;
        if from > last {
            return Ok(Some(ReadRange { first_seq: after_seq + 1, last_seq: last, events }));
        }
        let tree: &sled::Tree = self.inner.store.db();
        // The group holding `from` may start below it.
        let start = match tree.range(group_key(0)..=group_key(from)).next_back() {
            Some(item) => item.map_err(SpoolError::sled("reading events"))?.0,
            None => sled::IVec::from(&group_key(from)),
        };
        // Seqs only go up: a commit cutting the oldest group (remove, then
        // insert under a later key) between two steps of this scan may show
        // it both before and after, never neither.
        let mut floor = from;
        'groups: for item in tree.range(start..=sled::IVec::from(&group_key(last))) {
            let (k, v) = item.map_err(SpoolError::sled("reading events"))?;
            let Some(group) = StoredGroup::parse(k, v) else {
                self.decode_error(None, "malformed key");
                continue;
            };
            if group.malformed {
                if group.first_seq() >= floor {
                    self.decode_error(Some(group.first_seq()), "malformed group");
                    floor = group.first_seq() + 1;
                }
                continue;
            }
            for e in &group.entries {
                if e.seq < floor {
                    continue;
                }
                if e.seq > last {
                    break 'groups;
                }
                floor = e.seq + 1;
                let bytes = group.bytes(e);
                match pb::Event::decode(bytes) {
                    Ok(decoded) if decoded.seq == e.seq => {}
                    Ok(_) => {
                        self.decode_error(Some(e.seq), "seq differs from its place in the group");
                        continue;
                    }
                    Err(_) => {
                        self.decode_error(Some(e.seq), "not a protobuf Event");
                        continue;
                    }
                }
                if !events.is_empty() && used + bytes.len() > max_bytes {
                    range_last = events.last().map_or(last, |&(s, _)| s);
                    break 'groups;
                }
                used += bytes.len();
                events.push((e.seq, bytes.to_vec()));
                if events.len() >= max_events {
                    range_last = e.seq;
                    break 'groups;
                }
            }
        }
        Ok(Some(ReadRange { first_seq: after_seq + 1, last_seq: range_last, events }))
    }

    fn decode_error(&self, seq: Option<u64>, reason: &'static str) {
        let total = self.inner.decode_errors_total.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::warn!(
            name: "SpoolEntryDecodeError",
            seq = seq.unwrap_or(0),
            reason,
            total,
            "Spool entry is corrupt; skipped and declared lost."
        );
    }

    /// Deletes every event with seq up to `up_to_seq` (the aggregator holds
    /// them) and persists the acked seq, then syncs; returns how many
    /// events were deleted. (A stored group only partly acked stays on disk
    /// until the rest is acked; its acked events are never read again.) A value at or below the current acked seq is a
    /// no-op returning 0: acks never go backwards. A value above the
    /// highest seq ever assigned raises numbering above it (the aggregator
    /// holds seqs this spool forgot: they are never reused).
    ///
    /// Works when the spool is full: deletes and meta writes use the reserve.
    ///
    /// # Errors
    /// sled or fsync failures; the ack may then be lost, which only means
    /// the events are sent again.
    pub fn ack(&self, up_to_seq: u64) -> Result<u64, SpoolError> {
        let inner = &*self.inner;
        let tree: &sled::Tree = inner.store.db();
        let mut st = self.lock();
        if up_to_seq <= st.acked_seq {
            return Ok(0);
        }
        let mut batch = sled::Batch::default();
        let (mut count, mut freed) = (0u64, 0u64);
        for item in tree.range(group_key(0)..=group_key(up_to_seq)) {
            let (k, v) = item.map_err(SpoolError::sled("scanning acked events"))?;
            let Some(group) = StoredGroup::parse(k, v) else { continue };
            for e in group.entries.iter().filter(|e| e.seq > st.acked_seq && e.seq <= up_to_seq) {
                freed += cost(e);
                count += 1;
            }
            // A group partly acked stays; its acked events are ignored.
            if group.last_seq() <= up_to_seq {
                batch.remove(group.key);
            }
        }
        batch.insert(META_ACKED_SEQ, &up_to_seq.to_be_bytes());
        let raised = up_to_seq >= st.next_seq;
        let next_seq = if raised { up_to_seq + 1 } else { st.next_seq };
        if raised {
            batch.insert(META_NEXT_SEQ, &next_seq.to_be_bytes());
        }
        let counts = Counts {
            depth: st.depth - count.min(st.depth),
            bytes: st.bytes - freed.min(st.bytes),
            next_seq,
            acked_seq: up_to_seq,
        };
        batch.insert(META_COUNTS, &counts.encode());
        tree.apply_batch(batch).map_err(SpoolError::sled("applying an ack"))?;
        st.acked_seq = up_to_seq;
        st.depth = counts.depth;
        st.bytes = counts.bytes;
        inner.acked_seq.store(up_to_seq, Ordering::Relaxed);
        inner.depth.store(st.depth, Ordering::Relaxed);
        inner.bytes.store(st.bytes, Ordering::Relaxed);
        if raised {
            tracing::warn!(
                acked_seq = up_to_seq,
                last_seq = st.next_seq - 1,
                "Aggregator holds seqs this spool never assigned (spool lost?); numbering continues above them."
            );
            st.next_seq = up_to_seq + 1;
            inner.last_seq.store(up_to_seq, Ordering::Release);
            inner.notify.send_replace(up_to_seq);
        }
        if st.bytes <= inner.limit / 10 * 9 {
            if st.dropping {
                tracing::warn!(dropped = st.episode_dropped, "Spool below its cap again; no more events dropped.");
            }
            if st.refusing {
                tracing::info!(refused = st.episode_refused, "Spool below its cap again; sources resume.");
            }
            st.dropping = false;
            st.refusing = false;
            st.episode_dropped = 0;
            st.episode_refused = 0;
        }
        drop(st);
        inner.store.sync()?;
        tracing::debug!(name: "SpoolAcked", acked_seq = up_to_seq, deleted = count, "Spool acked.");
        Ok(count)
    }

    /// Makes everything written so far durable (the writer calls it at shutdown).
    ///
    /// # Errors
    /// sled or fsync failures.
    pub fn flush(&self) -> Result<(), SpoolError> {
        Ok(self.inner.store.sync()?)
    }

    /// A snapshot of the spool's state; never fails (a sled error reading
    /// the oldest event leaves `first_seq`/`oldest_captured_at_ns` at 0).
    pub fn stats(&self) -> SpoolStats {
        let inner = &*self.inner;
        let tree: &sled::Tree = inner.store.db();
        let (mut first_seq, mut oldest_captured_at_ns) = (0, 0);
        let acked_seq = self.acked_seq();
        let oldest = tree
            .range(group_key(0)..=group_key(u64::MAX))
            .map_while(Result::ok)
            .filter_map(|(k, v)| StoredGroup::parse(k, v))
            .find_map(|g| Some((g.entries.iter().find(|e| e.seq > acked_seq).copied()?, g)));
        if let Some((e, group)) = oldest {
            first_seq = e.seq;
            if !group.malformed {
                oldest_captured_at_ns = pb::Event::decode(group.bytes(&e)).map_or(0, |e| e.captured_at_ns);
            }
        }
        SpoolStats {
            depth: inner.depth.load(Ordering::Relaxed),
            bytes: inner.bytes.load(Ordering::Relaxed),
            max_bytes: inner.max_bytes,
            first_seq,
            last_seq: self.last_seq(),
            acked_seq: self.acked_seq(),
            oldest_captured_at_ns,
            dropped_total: inner.dropped_total.load(Ordering::Relaxed),
            full_refusals_total: inner.full_refusals_total.load(Ordering::Relaxed),
            decode_errors_total: inner.decode_errors_total.load(Ordering::Relaxed),
            quarantined: inner.quarantined.clone(),
        }
    }

    /// Highest seq ever assigned and durable (0 when none).
    pub fn last_seq(&self) -> u64 {
        self.inner.last_seq.load(Ordering::Acquire)
    }

    /// Highest seq acknowledged by the aggregator.
    pub fn acked_seq(&self) -> u64 {
        self.inner.acked_seq.load(Ordering::Relaxed)
    }

    /// A receiver of [`last_seq`](Self::last_seq), updated after every
    /// durable commit, so the uplink wakes up without polling.
    pub fn notify(&self) -> watch::Receiver<u64> {
        self.inner.notify.subscribe()
    }

    /// The agent identity stored events carry.
    pub fn agent_id(&self) -> &str {
        &self.inner.agent_id
    }

    /// Replaces the stored encoding of event `seq` by `value`, bypassing
    /// encoding: for tests of corrupt entries only.
    #[cfg(test)]
    fn put_raw_event(&self, seq: u64, value: &[u8]) {
        let tree: &sled::Tree = self.inner.store.db();
        let (k, v) = tree.range(group_key(0)..=group_key(seq)).next_back().expect("a group").expect("read");
        let group = StoredGroup::parse(k, v).expect("a group key");
        let mut framer = Framer::default();
        for e in &group.entries {
            framer.push(e.seq, if e.seq == seq { value } else { group.bytes(e) });
        }
        let mut batch = sled::Batch::default();
        batch.remove(group.key.clone());
        framer.write_to(&mut batch);
        tree.apply_batch(batch).expect("apply");
    }

    /// Stores a raw group value at `key_seq`: for tests of corrupt groups only.
    #[cfg(test)]
    fn put_raw_group(&self, key_seq: u64, value: &[u8]) {
        let tree: &sled::Tree = self.inner.store.db();
        tree.insert(group_key(key_seq), value).expect("insert");
        // As a hand edit would: the kept counts no longer describe the store.
        tree.remove(META_COUNTS).expect("remove");
    }
}

// === impl Commit ===

/// The state of one commit being built.
struct Commit {
    /// Stored groups not yet looked at by [`free`](Self::free), oldest
    /// first; `None` when none is left. Nothing else writes while a commit
    /// holds the state lock, so the scan sees what the commit started with.
    disk: Option<sled::Iter>,
    /// The stored group being dropped from, deleted in `batch`, and the index
    /// of its first entry still kept.
    head: Option<(StoredGroup, usize)>,
    acked_seq: u64,
    batch: sled::Batch,
    /// Events of this commit, in seq order: seq, encoding, cost.
    pending: VecDeque<(u64, Vec<u8>, u64)>,
    dropped: u64,
    first_dropped: Option<u64>,
}

impl Commit {
    /// Drops the oldest unacked events (stored ones, then this commit's)
    /// until `need` bytes are freed or none is left; returns (bytes, events)
    /// freed.
    fn free(&mut self, need: u64) -> Result<(u64, u64), SpoolError> {
        let (mut freed, mut events) = (0u64, 0u64);
        while freed < need {
            if self.head.is_none() {
                let Some(item) = self.disk.as_mut().and_then(Iterator::next) else {
                    self.disk = None;
                    break;
                };
                let (k, v) = item.map_err(SpoolError::sled("scanning events to drop"))?;
                let Some(group) = StoredGroup::parse(k, v) else { continue };
                self.batch.remove(group.key.clone());
                // Events of a partly acked group are neither counted nor kept.
                let live = group.entries.iter().position(|e| e.seq > self.acked_seq).unwrap_or(group.entries.len());
                self.head = Some((group, live));
            }
            let Some((group, next)) = self.head.as_mut() else { break };
            while freed < need && *next < group.entries.len() {
                let e = group.entries[*next];
                self.first_dropped.get_or_insert(e.seq);
                freed += cost(&e);
                events += 1;
                *next += 1;
            }
            if *next == group.entries.len() {
                self.head = None;
            }
        }
        while freed < need {
            let Some((seq, _, cost)) = self.pending.pop_front() else { break };
            self.first_dropped.get_or_insert(seq);
            freed += cost;
            events += 1;
        }
        self.dropped += events;
        Ok((freed, events))
    }

    /// The batch to apply: the rest of a cut stored group under its new
    /// first seq, then this commit's events as groups.
    fn finish(self) -> sled::Batch {
        let Commit { head, pending, mut batch, .. } = self;
        if let Some((group, next)) = head.filter(|(g, _)| !g.malformed) {
            let mut cut = Framer::default();
            for e in &group.entries[next..] {
                cut.push(e.seq, group.bytes(e));
            }
            cut.write_to(&mut batch);
        }
        let mut framer = Framer::default();
        for (seq, event, _) in &pending {
            framer.push(*seq, event);
        }
        framer.write_to(&mut batch);
        batch
    }
}

#[cfg(test)]
mod tests;
