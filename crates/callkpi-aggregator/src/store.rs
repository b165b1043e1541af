//! The aggregator's durable event store (sled, through `callkpi-durable`).
//!
//! # Key layout
//!
//! | tree | key | value |
//! |---|---|---|
//! | `groups` | agent id bytes, `0x00`, first seq as u64 big-endian | a **group**: consecutive events of one batch, each the `pb::Event` encoding exactly as the agent sent it, as a frame of [`callkpi_durable::frame`] |
//! | `events` | agent id bytes, `0x00`, seq as u64 big-endian | first layout: one event per key; read, no longer written |
//! | `quarantine` | same as `events` | one event per key, for events this build cannot interpret (see below) |
//! | `agents` | agent id bytes | [`AgentRecord`] as JSON |
//!
//! Agent ids never contain `0x00` (config validation), and the seq is
//! big-endian, so one agent's groups (or events) are one contiguous key
//! range in seq order: [`Store::events_after`] is a range scan, starting
//! at the group that holds its first seq (the last key at or below it).
//!
//! A batch's new interpretable events are cut into groups of at most
//! [`GROUP_TARGET_BYTES`] of frame (an event larger than that gets a group
//! of its own). Why groups: sled 0.34 spends several microseconds per key
//! inserted whatever its size (each insert clones the leaf node), and one
//! key per event was most of the aggregator's CPU. Why not one value per
//! batch: sled writes any log item above a quarter of its 512 KiB segment
//! to a blob file, and that item may be a whole leaf node (up to 17 values)
//! when sled rewrites one; values of 4 KiB keep every leaf far below it.
//! Groups of one agent never overlap: a batch only ever adds seqs above the
//! hwm, so each group's first seq is above the last seq of the one before.
//!
//! A store of the first layout (one `events` key per event) is not
//! rewritten: readers merge both trees by seq, and the idempotence check
//! looks in groups, then `events`, then `quarantine`. An aggregator older
//! than groups does not see them: downgrading loses what was stored since.
//!
//! An event that decodes but does not convert to the core model (an enum
//! value or a `kind` from a newer agent) goes to `quarantine` instead of
//! `events`, with its original bytes, so a newer aggregator can replay it;
//! it is counted and acked like any other (ingest.proto).
//!
//! # High-water mark
//!
//! `AgentRecord::hwm` is the highest seq S such that every seq 1..=S of the
//! agent is held in `events` or `quarantine`, or was declared absent by a
//! Batch (a seq of a Batch's range with no event). Because a stream's
//! Batches are contiguous from the Welcome's S + 1, the held set is always
//! exactly 1..=S: nothing above the hwm is ever written.
//!
//! # Durability point
//!
//! [`Store::ingest`] writes a batch's new events and the agent's record
//! (new hwm) in **one** atomic sled write: a write-only transaction over the
//! three trees, which sled recovers all or nothing. It then calls
//! [`Durable::sync`] (sled flush + `fdatasync` of the data file) and returns
//! only after that sync succeeded; the caller sends the Ack only then. So:
//!
//! - an acked seq survives a crash or power cut;
//! - a crash between the write and the sync loses at most unacked batches,
//!   which the agent still holds and sends again;
//! - syncs are grouped: concurrent ingests from several agents share one
//!   fsync (the write generation counter below).
//!
//! `Welcome.resume_after_seq` also acts as an Ack, so [`Store::resume_point`]
//! syncs before returning the hwm it read: a Welcome never announces a seq
//! that is not yet durable.
//!
//! Readers ([`Store::events_after`]) may see a batch between its write and
//! its sync. If the process then crashes, the agent re-sends the same bytes,
//! so a reader that restarts with the process sees the same events again.
//!
//! # Idempotence
//!
//! A seq at or below the hwm is already settled. When a Batch carries it
//! again, its bytes are compared with the stored ones: equal is a duplicate
//! (ignored, counted); different is a [`StoreError::Conflict`] (an agent
//! that lost its spool and renumbered from 1 would otherwise be silently
//! acked and lose data); an event for a seq declared absent earlier is
//! ignored and counted as late.
//!
//! # Locking
//!
//! A sibling `<store>.lock` file is held (`flock`) while the store is open:
//! `callkpi_durable::Durable::open` quarantines a store it cannot open, and
//! sled cannot open a store another process holds, so without this lock a
//! second aggregator started by mistake would move the live store aside.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use callkpi_durable::{Durable, DurableError, frame};
use callkpi_proto::pb;
use fs2::FileExt as _;
use prost::Message as _;
use serde::{Deserialize, Serialize};
use sled::Transactional as _;
use tokio::sync::broadcast;

/// Capacity of the ingestion notification channel; a receiver further
/// behind gets `RecvError::Lagged` and should re-read [`Store::agents`].
const NOTIFY_CAPACITY: usize = 1024;

/// Largest group frame a batch writes, unless one event alone is larger
/// (see the module docs).
pub const GROUP_TARGET_BYTES: usize = 4096;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Opening or syncing failed.
    #[error(transparent)]
    Durable(#[from] DurableError),
    /// A sled operation failed (I/O error, disk full, corruption).
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    /// Another process holds the store.
    #[error("store {path} is in use by another process (lock file {lock})")]
    Locked {
        /// Store directory.
        path: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// The lock file or the store's parent directory cannot be created.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The batch does not start at or below hwm + 1.
    #[error("agent {agent_id}: batch starts at seq {first_seq} but only 1..={hwm} is held (gap)")]
    Gap {
        /// The agent.
        agent_id: String,
        /// The agent's hwm.
        hwm: u64,
        /// The batch's first seq.
        first_seq: u64,
    },
    /// A seq already held arrived with different bytes.
    #[error("agent {agent_id}: seq {seq} is already held with different content")]
    Conflict {
        /// The agent.
        agent_id: String,
        /// The seq.
        seq: u64,
    },
    /// The batch is malformed (range, order).
    #[error("agent {agent_id}: invalid batch: {reason}")]
    InvalidBatch {
        /// The agent.
        agent_id: String,
        /// What is wrong.
        reason: String,
    },
    /// A stored value does not decode.
    #[error("agent {agent_id}: stored {what} does not decode: {reason}")]
    Corrupt {
        /// The agent.
        agent_id: String,
        /// `record` or `event <seq>`.
        what: String,
        /// The decoder's error.
        reason: String,
    },
    /// A KPI rollup, sealed-call entry or snapshot does not encode or decode.
    #[error("KPI state: {what}: {reason}")]
    KpiState {
        /// What was being read or written.
        what: String,
        /// The codec's error.
        reason: String,
    },
    /// A blocking store task panicked or was cancelled.
    #[error("store task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// What the store knows about one agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AgentRecord {
    /// The agent id (the record's key).
    #[serde(skip)]
    pub agent_id: String,
    /// High-water mark: every seq 1..=hwm is held or declared absent.
    pub hwm: u64,
    /// Site: the configured one, else the agent's `Hello.site`.
    pub site: String,
    /// Agent software version from its last Hello.
    pub version: String,
    /// Aggregator wall clock when the agent last sent anything (Hello,
    /// Batch or Heartbeat), Unix ns.
    pub last_seen_ns: i64,
    /// Agent wall clock minus aggregator wall clock, ns (ingest.proto's
    /// sign): the agent's own estimate from its last Heartbeat, else the
    /// aggregator's coarse estimate at Hello (biased by the one-way delay).
    pub clock_offset_ns: Option<i64>,
    /// Round trip of the offset estimate, ns, when the agent reported it
    /// (the offset's error is at most half of it).
    pub clock_rtt_ns: Option<u64>,
    /// Whether the agent's clock was NTP-synchronised at its last message.
    pub clock_synced: bool,
    /// `captured_at_ns` of the highest-seq event stored, if any.
    pub last_captured_ns: Option<i64>,
    /// Events stored in `events`.
    pub events_stored: u64,
    /// Events stored in `quarantine`.
    pub events_quarantined: u64,
    /// Seqs declared absent by the agent (dropped by its spool's byte cap).
    pub events_lost: u64,
    /// Highest seq in the agent's spool at its last Hello, Heartbeat or
    /// Batch (a Batch proves the spool held its last seq): when it is at or
    /// below `hwm`, the agent had delivered everything it had at
    /// `last_seen_ns` (reports use this for completeness).
    pub spool_last_seq: u64,
    /// Lowest seq in the agent's spool at its last Hello or Heartbeat (0
    /// when empty): its oldest unacknowledged event while above `hwm`.
    pub spool_first_seq: u64,
    /// `captured_at_ns` of the event at `spool_first_seq` (agent clock), 0
    /// when the spool was empty.
    pub spool_first_captured_ns: i64,
    /// Bytes in the agent's spool at its last Hello or Heartbeat.
    pub spool_bytes: u64,
}

/// "Agent X now durably holds every seq up to N": sent after each ingest's
/// sync, for consumers following ingestion live (the KPI engine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingested {
    /// The agent.
    pub agent_id: Arc<str>,
    /// Its new hwm.
    pub up_to_seq: u64,
}

/// One event of a batch to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventToStore {
    /// Its seq (from the decoded event).
    pub seq: u64,
    /// Its encoding, exactly as received.
    pub bytes: Vec<u8>,
    /// Its `captured_at_ns`.
    pub captured_at_ns: i64,
    /// Whether it converts to the core model; if not it is quarantined.
    pub interpretable: bool,
}

/// A batch: the range `first_seq..=last_seq` and the events of it the agent
/// still held, in strictly increasing seq order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchToStore {
    /// First seq of the range.
    pub first_seq: u64,
    /// Last seq of the range.
    pub last_seq: u64,
    /// Events of the range; missing seqs are declared absent.
    pub events: Vec<EventToStore>,
}

/// What an ingest did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ingest {
    /// The agent's hwm after the batch: the value to ack.
    pub up_to_seq: u64,
    /// New events written to `events`.
    pub stored: u64,
    /// New events written to `quarantine`.
    pub quarantined: u64,
    /// Events already held with the same bytes, ignored.
    pub duplicates: u64,
    /// Seqs of the range newly declared absent.
    pub lost: u64,
    /// Events for seqs declared absent earlier, ignored.
    pub late: u64,
}

/// The store. Cheap to clone; every clone is the same store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    durable: Durable,
    groups: sled::Tree,
    events: sled::Tree,
    quarantine: sled::Tree,
    agents: sled::Tree,
    /// The KPI engine's rollups, sealed-call index and snapshot (`kpi_store`).
    kpi: sled::Tree,
    /// Serialises read-modify-writes of agent records (hwm), so two streams
    /// of one agent (one superseding the other) cannot move it backwards.
    write_lock: Mutex<()>,
    /// Write generation: bumped after every atomic write.
    written: AtomicU64,
    /// Highest write generation known durable; the mutex groups syncs.
    synced: tokio::sync::Mutex<u64>,
    notify: broadcast::Sender<Ingested>,
    quarantined: Option<PathBuf>,
    /// Held for the store's lifetime; the flock is released on drop.
    _lock: std::fs::File,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.inner.durable.path()).finish_non_exhaustive()
    }
}

/// Key of (agent, seq) in `events` and `quarantine`.
fn event_key(agent_id: &str, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(agent_id.len() + 9);
    key.extend_from_slice(agent_id.as_bytes());
    key.push(0);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The seq of an `events` key (or the first seq of a `groups` key).
fn key_seq(key: &[u8]) -> u64 {
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&key[key.len() - 8..]);
    u64::from_be_bytes(seq)
}

/// The events of a stored group.
fn parse_group(agent_id: &str, key: &[u8], value: &[u8]) -> Result<Vec<frame::Entry>, StoreError> {
    let first = key_seq(key);
    frame::parse(first, value).ok_or_else(|| StoreError::Corrupt {
        agent_id: agent_id.to_owned(),
        what: format!("group {first}"),
        reason: "not a well-formed frame".into(),
    })
}

/// One stored event's bytes, inside a sled value.
struct RawEvent {
    seq: u64,
    value: sled::IVec,
    start: usize,
    end: usize,
}

impl RawEvent {
    fn decode(self, agent_id: &str) -> Result<(u64, pb::Event), StoreError> {
        let event = pb::Event::decode(&self.value[self.start..self.end]).map_err(|e| StoreError::Corrupt {
            agent_id: agent_id.to_owned(),
            what: format!("event {}", self.seq),
            reason: e.to_string(),
        })?;
        Ok((self.seq, event))
    }
}

/// Finds the stored bytes of seqs at or below the hwm, for the idempotence
/// check; keeps the last group read, since a re-sent batch asks for its
/// seqs in order.
struct HeldLookup<'a> {
    inner: &'a Inner,
    agent_id: &'a str,
    /// Value and entries of the last group read.
    group: Option<(sled::IVec, Vec<frame::Entry>)>,
}

impl HeldLookup<'_> {
    /// Whether `seq` is held with exactly `bytes`; `None` when it is not
    /// held (declared absent).
    fn same(&mut self, seq: u64, bytes: &[u8]) -> Result<Option<bool>, StoreError> {
        let span = |entries: &[frame::Entry]| Some(entries.first()?.seq..=entries.last()?.seq);
        let cached = self.group.as_ref().is_some_and(|(_, entries)| span(entries).is_some_and(|r| r.contains(&seq)));
        if !cached {
            self.group = None;
            let range = event_key(self.agent_id, 0)..=event_key(self.agent_id, seq);
            if let Some(kv) = self.inner.groups.range(range).next_back() {
                let (k, v) = kv?;
                let entries = parse_group(self.agent_id, &k, &v)?;
                self.group = Some((v, entries));
            }
        }
        if let Some((value, entries)) = &self.group
            && let Ok(i) = entries.binary_search_by_key(&seq, |e| e.seq)
        {
            return Ok(Some(value[entries[i].start..entries[i].end] == *bytes));
        }
        let key = event_key(self.agent_id, seq);
        let held = match self.inner.events.get(&key)? {
            Some(v) => Some(v),
            None => self.inner.quarantine.get(&key)?,
        };
        Ok(held.map(|v| *v == *bytes))
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`. Blocking.
    ///
    /// A corrupt store is moved aside by `callkpi-durable` and an empty one
    /// started ([`Store::quarantined`] says where it went).
    ///
    /// # Errors
    /// When another process holds the store, or it cannot be opened at all.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let mut lock_path = dir.as_os_str().to_owned();
        lock_path.push(".lock");
        let lock_path = PathBuf::from(lock_path);
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::Io {
                what: "creating",
                path: parent.to_owned(),
                source,
            })?;
        }
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| StoreError::Io { what: "opening", path: lock_path.clone(), source })?;
        if lock.try_lock_exclusive().is_err() {
            return Err(StoreError::Locked { path: dir.to_owned(), lock: lock_path });
        }
        let opened = Durable::open(dir, cache_bytes)?;
        let durable = opened.store;
        let db = durable.db();
        let (groups, events, quarantine, agents) =
            (db.open_tree("groups")?, db.open_tree("events")?, db.open_tree("quarantine")?, db.open_tree("agents")?);
        let kpi = db.open_tree("kpi")?;
        let (notify, _) = broadcast::channel(NOTIFY_CAPACITY);
        Ok(Self {
            inner: Arc::new(Inner {
                durable,
                groups,
                events,
                quarantine,
                agents,
                kpi,
                write_lock: Mutex::new(()),
                written: AtomicU64::new(0),
                synced: tokio::sync::Mutex::new(0),
                notify,
                quarantined: opened.quarantined,
                _lock: lock,
            }),
        })
    }

    /// The tree the KPI engine persists into (see `kpi_store`).
    pub(crate) fn kpi_tree(&self) -> &sled::Tree {
        &self.inner.kpi
    }

    /// Makes everything written so far durable. Blocking.
    ///
    /// # Errors
    /// When the fsync fails.
    pub(crate) fn sync_blocking(&self) -> Result<(), StoreError> {
        self.inner.durable.sync()?;
        Ok(())
    }

    /// One event of `agent_id` by seq, if it is stored and interpretable. Blocking.
    ///
    /// # Errors
    /// When sled fails or the event does not decode.
    pub(crate) fn event_at(&self, agent_id: &str, seq: u64) -> Result<Option<pb::Event>, StoreError> {
        let found = self.events_after(agent_id, seq.saturating_sub(1), 1)?;
        Ok(found.into_iter().find(|(s, _)| *s == seq).map(|(_, e)| e))
    }

    /// Deletes `agent_id`'s oldest stored events, whole groups at a time,
    /// while every event of a group happened (source time, else capture
    /// time) before `before_ns` and its seqs are at most `up_to_seq` (what
    /// the KPI engine has applied). At most `max_groups` per call; returns
    /// (groups, events) deleted. The hwm stays: a re-sent old seq is then
    /// ignored as late, never stored again. Blocking.
    ///
    /// # Errors
    /// When sled fails or a group does not decode.
    pub(crate) fn expire_events(
        &self,
        agent_id: &str,
        before_ns: i64,
        up_to_seq: u64,
        max_groups: usize,
    ) -> Result<(u64, u64), StoreError> {
        let old = |bytes: &[u8]| {
            pb::Event::decode(bytes).map(|e| e.source_time_ns.unwrap_or(e.captured_at_ns) < before_ns).unwrap_or(false)
        };
        let (mut groups, mut events) = (0u64, 0u64);
        let range = event_key(agent_id, 0)..=event_key(agent_id, u64::MAX);
        for kv in self.inner.groups.range(range.clone()).take(max_groups) {
            let (k, v) = kv?;
            let entries = parse_group(agent_id, &k, &v)?;
            let last = entries.last().map_or(0, |e| e.seq);
            if last > up_to_seq || !entries.iter().all(|e| old(&v[e.start..e.end])) {
                break;
            }
            self.inner.groups.remove(&k)?;
            groups += 1;
            events += entries.len() as u64;
        }
        // Stores of the first layout: one key per event.
        for kv in self.inner.events.range(range).take(max_groups.saturating_mul(16)) {
            let (k, v) = kv?;
            if key_seq(&k) > up_to_seq || !old(&v) {
                break;
            }
            self.inner.events.remove(&k)?;
            events += 1;
        }
        Ok((groups, events))
    }

    /// Time (source, else capture) of `agent_id`'s oldest stored event. Blocking.
    ///
    /// # Errors
    /// When sled fails or the group does not decode.
    pub(crate) fn oldest_event_ns(&self, agent_id: &str) -> Result<Option<i64>, StoreError> {
        let range = event_key(agent_id, 0)..=event_key(agent_id, u64::MAX);
        let Some(kv) = self.inner.groups.range(range).next() else { return Ok(None) };
        let (k, v) = kv?;
        let entries = parse_group(agent_id, &k, &v)?;
        Ok(entries
            .iter()
            .filter_map(|e| pb::Event::decode(&v[e.start..e.end]).ok())
            .map(|e| e.source_time_ns.unwrap_or(e.captured_at_ns))
            .min())
    }

    /// Bytes of keys and values per tree (a full scan: for a background task). Blocking.
    pub(crate) fn tree_bytes(&self) -> Vec<(&'static str, u64)> {
        let size = |t: &sled::Tree| t.iter().flatten().map(|(k, v)| (k.len() + v.len()) as u64).sum();
        vec![
            ("groups", size(&self.inner.groups)),
            ("events", size(&self.inner.events)),
            ("quarantine", size(&self.inner.quarantine)),
            ("agents", size(&self.inner.agents)),
            ("kpi", size(&self.inner.kpi)),
        ]
    }

    /// Where a corrupt previous store was moved at open, if it was.
    pub fn quarantined(&self) -> Option<&Path> {
        self.inner.quarantined.as_deref()
    }

    /// Bytes the store takes on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.inner.durable.size_on_disk()
    }

    /// Follows ingestion: one [`Ingested`] per durable batch, in order per agent.
    pub fn subscribe(&self) -> broadcast::Receiver<Ingested> {
        self.inner.notify.subscribe()
    }

    /// The record of `agent_id`, if it ever connected. Blocking (one read).
    ///
    /// # Errors
    /// When sled fails or the record is corrupt.
    pub fn agent(&self, agent_id: &str) -> Result<Option<AgentRecord>, StoreError> {
        self.inner.agents.get(agent_id.as_bytes())?.map(|v| decode_record(agent_id, &v)).transpose()
    }

    /// Every agent that ever connected, by id. Blocking.
    ///
    /// # Errors
    /// When sled fails or a record is corrupt.
    pub fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        self.inner
            .agents
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                decode_record(&String::from_utf8_lossy(&k), &v)
            })
            .collect()
    }

    /// Up to `limit` interpretable events of `agent_id` with seq above
    /// `after_seq`, in seq order (quarantined ones are skipped; see
    /// [`Store::quarantined_after`]). Blocking.
    ///
    /// # Errors
    /// When sled fails or a stored event does not decode.
    pub fn events_after(
        &self,
        agent_id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, pb::Event)>, StoreError> {
        let Some(first) = after_seq.checked_add(1) else { return Ok(Vec::new()) };
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Events of the first layout, then groups: both in seq order, merged.
        let mut legacy = Vec::new();
        for kv in self.inner.events.range(event_key(agent_id, first)..=event_key(agent_id, u64::MAX)).take(limit) {
            let (k, v) = kv?;
            let len = v.len();
            legacy.push(RawEvent { seq: key_seq(&k), value: v, start: 0, end: len });
        }
        let grouped = self.grouped_from(agent_id, first, limit)?;
        let mut merged = Vec::with_capacity(limit.min(legacy.len() + grouped.len()));
        let (mut a, mut b) = (legacy.into_iter().peekable(), grouped.into_iter().peekable());
        while merged.len() < limit {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x.seq < y.seq => a.next(),
                (Some(x), Some(y)) if x.seq == y.seq => {
                    a.next();
                    b.next()
                }
                (_, Some(_)) => b.next(),
                (Some(_), None) => a.next(),
                (None, None) => None,
            };
            let Some(raw) = next else { break };
            merged.push(raw.decode(agent_id)?);
        }
        Ok(merged)
    }

    /// Up to `limit` grouped events of `agent_id` from seq `first` on, in seq order.
    fn grouped_from(&self, agent_id: &str, first: u64, limit: usize) -> Result<Vec<RawEvent>, StoreError> {
        let groups = &self.inner.groups;
        // The group holding `first` may start below it.
        let start = match groups.range(event_key(agent_id, 0)..=event_key(agent_id, first)).next_back() {
            Some(kv) => kv?.0,
            None => sled::IVec::from(event_key(agent_id, first)),
        };
        let mut out = Vec::new();
        for kv in groups.range(start..=sled::IVec::from(event_key(agent_id, u64::MAX))) {
            let (k, v) = kv?;
            for e in parse_group(agent_id, &k, &v)? {
                if e.seq < first {
                    continue;
                }
                out.push(RawEvent { seq: e.seq, value: v.clone(), start: e.start, end: e.end });
                if out.len() >= limit {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    /// The same as [`Store::events_after`] over the quarantine.
    ///
    /// # Errors
    /// When sled fails or a stored event does not decode.
    pub fn quarantined_after(
        &self,
        agent_id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, pb::Event)>, StoreError> {
        scan(&self.inner.quarantine, agent_id, after_seq, limit)
    }

    /// Stores a batch of `agent_id` durably and idempotently (see the module
    /// doc), then notifies subscribers. When this returns `Ok`, every seq up
    /// to the returned `up_to_seq` is durable: ack it.
    ///
    /// # Errors
    /// [`StoreError::Gap`], [`StoreError::Conflict`], [`StoreError::InvalidBatch`]
    /// for a batch that must not be acked; other variants when the disk failed
    /// (then nothing of this batch may be considered durable).
    ///
    /// # Cancel safety
    /// Dropping the future after the write but before the sync leaves the
    /// batch written but maybe not durable; it is then simply not acked, and
    /// the next sync (any ingest, or [`Store::resume_point`]) makes it durable.
    pub async fn ingest(&self, agent_id: &str, batch: BatchToStore) -> Result<Ingest, StoreError> {
        let store = self.clone();
        let agent = agent_id.to_owned();
        let (outcome, generation) = tokio::task::spawn_blocking(move || store.write_batch(&agent, batch)).await??;
        self.sync_through(generation).await?;
        let _ = self.inner.notify.send(Ingested { agent_id: agent_id.into(), up_to_seq: outcome.up_to_seq });
        Ok(outcome)
    }

    /// The agent's hwm, made durable first: the value for
    /// `Welcome.resume_after_seq`.
    ///
    /// # Errors
    /// When sled or the sync fails.
    pub async fn resume_point(&self, agent_id: &str) -> Result<u64, StoreError> {
        let hwm = self.agent(agent_id)?.map_or(0, |r| r.hwm);
        self.sync_through(self.inner.written.load(Ordering::Acquire)).await?;
        Ok(hwm)
    }

    /// Makes everything written so far durable.
    ///
    /// # Errors
    /// When the sync fails.
    pub async fn sync(&self) -> Result<(), StoreError> {
        let durable = self.inner.durable.clone();
        tokio::task::spawn_blocking(move || durable.sync()).await??;
        Ok(())
    }

    /// Updates an agent's record outside a batch (presence, clocks), keeping
    /// its hwm. Not synced: it becomes durable with the next sync. Blocking.
    ///
    /// # Errors
    /// When sled fails or the record is corrupt.
    pub(crate) fn update_agent(&self, agent_id: &str, f: impl FnOnce(&mut AgentRecord)) -> Result<(), StoreError> {
        let _guard = self.inner.write_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut record = self.agent(agent_id)?.unwrap_or_default();
        let hwm = record.hwm;
        f(&mut record);
        record.hwm = hwm;
        self.inner.agents.insert(agent_id.as_bytes(), encode_record(&record))?;
        self.inner.written.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Waits until write generation `generation` is durable, syncing if
    /// nobody else did (one sync covers every write made before it starts).
    async fn sync_through(&self, generation: u64) -> Result<(), StoreError> {
        let mut synced = self.inner.synced.lock().await;
        if *synced >= generation {
            return Ok(());
        }
        let target = self.inner.written.load(Ordering::Acquire);
        self.sync().await?;
        *synced = target;
        Ok(())
    }

    /// The blocking part of [`Store::ingest`]: checks, then one atomic write.
    /// Returns the outcome and the write generation to sync through.
    fn write_batch(&self, agent_id: &str, batch: BatchToStore) -> Result<(Ingest, u64), StoreError> {
        let invalid = |reason: String| StoreError::InvalidBatch { agent_id: agent_id.to_owned(), reason };
        if batch.first_seq == 0 || batch.last_seq < batch.first_seq {
            return Err(invalid(format!("range {}..={} is empty or starts at 0", batch.first_seq, batch.last_seq)));
        }
        let mut previous = batch.first_seq - 1;
        for e in &batch.events {
            if e.seq <= previous || e.seq > batch.last_seq {
                return Err(invalid(format!(
                    "event seq {} is out of order or outside {}..={}",
                    e.seq, batch.first_seq, batch.last_seq
                )));
            }
            previous = e.seq;
        }

        let _guard = self.inner.write_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut record = self.agent(agent_id)?.unwrap_or_default();
        let hwm = record.hwm;
        if batch.first_seq > hwm.saturating_add(1) {
            return Err(StoreError::Gap { agent_id: agent_id.to_owned(), hwm, first_seq: batch.first_seq });
        }
        let mut outcome = Ingest::default();
        let mut fresh: Vec<(u64, Vec<u8>)> = Vec::with_capacity(batch.events.len());
        let mut quarantine = sled::Batch::default();
        let mut held = HeldLookup { inner: &self.inner, agent_id, group: None };
        for e in batch.events {
            if e.seq <= hwm {
                match held.same(e.seq, &e.bytes)? {
                    Some(true) => outcome.duplicates += 1,
                    Some(false) => return Err(StoreError::Conflict { agent_id: agent_id.to_owned(), seq: e.seq }),
                    None => outcome.late += 1,
                }
                continue;
            }
            record.last_captured_ns = Some(e.captured_at_ns);
            if e.interpretable {
                fresh.push((e.seq, e.bytes));
                outcome.stored += 1;
            } else {
                quarantine.insert(event_key(agent_id, e.seq), e.bytes);
                outcome.quarantined += 1;
            }
        }
        let mut groups = sled::Batch::default();
        for (first, frame) in frame::build(fresh.iter().map(|(seq, b)| (*seq, b.as_slice())), GROUP_TARGET_BYTES) {
            groups.insert(event_key(agent_id, first), frame);
        }
        let new_seqs = batch.last_seq.saturating_sub(hwm.max(batch.first_seq - 1));
        outcome.lost = new_seqs - outcome.stored - outcome.quarantined;
        outcome.up_to_seq = hwm.max(batch.last_seq);
        record.hwm = outcome.up_to_seq;
        record.events_stored += outcome.stored;
        record.events_quarantined += outcome.quarantined;
        record.events_lost += outcome.lost;

        if new_seqs > 0 {
            let value = encode_record(&record);
            (&self.inner.groups, &self.inner.quarantine, &self.inner.agents)
                .transaction(|(gr, qu, ag)| {
                    gr.apply_batch(&groups)?;
                    qu.apply_batch(&quarantine)?;
                    ag.insert(agent_id.as_bytes(), value.as_slice())?;
                    Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
                })
                .map_err(|e| match e {
                    sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
                    sled::transaction::TransactionError::Abort(()) => unreachable!("the transaction never aborts"),
                })?;
        }
        let generation = self.inner.written.fetch_add(1, Ordering::AcqRel) + 1;
        Ok((outcome, generation))
    }
}

fn encode_record(record: &AgentRecord) -> Vec<u8> {
    serde_json::to_vec(record).expect("an AgentRecord always serialises")
}

fn decode_record(agent_id: &str, value: &[u8]) -> Result<AgentRecord, StoreError> {
    let mut record: AgentRecord = serde_json::from_slice(value).map_err(|e| StoreError::Corrupt {
        agent_id: agent_id.to_owned(),
        what: "record".into(),
        reason: e.to_string(),
    })?;
    record.agent_id = agent_id.to_owned();
    Ok(record)
}

fn scan(tree: &sled::Tree, agent_id: &str, after_seq: u64, limit: usize) -> Result<Vec<(u64, pb::Event)>, StoreError> {
    let Some(first) = after_seq.checked_add(1) else { return Ok(Vec::new()) };
    tree.range(event_key(agent_id, first)..=event_key(agent_id, u64::MAX))
        .take(limit)
        .map(|kv| {
            let (k, v) = kv?;
            let seq = key_seq(&k);
            let event = pb::Event::decode(v.as_ref()).map_err(|e| StoreError::Corrupt {
                agent_id: agent_id.to_owned(),
                what: format!("event {seq}"),
                reason: e.to_string(),
            })?;
            Ok((seq, event))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(agent: &str, seq: u64, caller: &str) -> EventToStore {
        let e = pb::Event {
            agent_id: agent.into(),
            seq,
            site: "paris".into(),
            source: pb::SourceKind::AsteriskAmi.into(),
            call_id: format!("call-{seq}"),
            captured_at_ns: 1_700_000_000_000_000_000 + seq as i64,
            kind: Some(pb::event::Kind::CallOffered(pb::event::CallOffered {
                direction: pb::Direction::Inbound.into(),
                caller: caller.into(),
                called: "0140000000".into(),
                trunk: None,
            })),
            ..Default::default()
        };
        EventToStore { seq, bytes: e.encode_to_vec(), captured_at_ns: e.captured_at_ns, interpretable: true }
    }

    fn batch(first: u64, last: u64, seqs: &[u64]) -> BatchToStore {
        BatchToStore { first_seq: first, last_seq: last, events: seqs.iter().map(|&s| event("a", s, "06")).collect() }
    }

    fn open(dir: &Path) -> Store {
        Store::open(&dir.join("store"), callkpi_durable::DEFAULT_CACHE_BYTES).expect("opens")
    }

    #[tokio::test]
    async fn ingest_is_idempotent_and_durable() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut live = store.subscribe();
        assert_eq!(store.resume_point("a").await.unwrap(), 0);

        let first = store.ingest("a", batch(1, 3, &[1, 2, 3])).await.unwrap();
        assert_eq!(first, Ingest { up_to_seq: 3, stored: 3, ..Ingest::default() });
        assert_eq!(live.recv().await.unwrap(), Ingested { agent_id: "a".into(), up_to_seq: 3 });

        // The same batch again changes nothing and is acked again.
        let again = store.ingest("a", batch(1, 3, &[1, 2, 3])).await.unwrap();
        assert_eq!(again, Ingest { up_to_seq: 3, duplicates: 3, ..Ingest::default() });
        // An overlapping batch stores only the new seqs; seq 6 is declared absent.
        let overlap = store.ingest("a", batch(2, 6, &[2, 3, 4, 5])).await.unwrap();
        assert_eq!(overlap, Ingest { up_to_seq: 6, stored: 2, duplicates: 2, lost: 1, ..Ingest::default() });
        // A late event for the absent seq is ignored.
        let late = store.ingest("a", batch(6, 6, &[6])).await.unwrap();
        assert_eq!(late, Ingest { up_to_seq: 6, late: 1, ..Ingest::default() });

        let held = store.events_after("a", 0, 100).unwrap();
        assert_eq!(held.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        assert_eq!(held[0].1.call_id, "call-1");
        assert_eq!(store.events_after("a", 3, 1).unwrap().len(), 1);
        assert!(store.events_after("a", u64::MAX, 10).unwrap().is_empty());
        assert!(store.events_after("b", 0, 10).unwrap().is_empty());

        drop(store);
        let store = open(dir.path());
        let records = store.agents().unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!((records[0].agent_id.as_str(), records[0].hwm, records[0].events_lost), ("a", 6, 1));
        assert_eq!(store.resume_point("a").await.unwrap(), 6);
    }

    #[tokio::test]
    async fn conflicts_gaps_and_bad_ranges_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.ingest("a", batch(1, 2, &[1, 2])).await.unwrap();

        let mut changed = batch(2, 2, &[]);
        changed.events.push(event("a", 2, "07"));
        assert!(matches!(store.ingest("a", changed).await, Err(StoreError::Conflict { seq: 2, .. })));
        assert!(matches!(store.ingest("a", batch(4, 4, &[4])).await, Err(StoreError::Gap { hwm: 2, .. })));
        for bad in [batch(0, 1, &[1]), batch(3, 2, &[]), batch(3, 4, &[4, 3]), batch(3, 4, &[5])] {
            assert!(matches!(store.ingest("a", bad).await, Err(StoreError::InvalidBatch { .. })));
        }
        assert_eq!(store.agent("a").unwrap().unwrap().hwm, 2);
    }

    #[tokio::test]
    async fn uninterpretable_events_are_quarantined() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut b = batch(1, 2, &[1, 2]);
        b.events[1].interpretable = false;
        let outcome = store.ingest("a", b).await.unwrap();
        assert_eq!((outcome.stored, outcome.quarantined, outcome.up_to_seq), (1, 1, 2));
        assert_eq!(store.events_after("a", 0, 10).unwrap().len(), 1);
        assert_eq!(store.quarantined_after("a", 0, 10).unwrap()[0].0, 2);
    }

    #[tokio::test]
    async fn presence_updates_keep_the_hwm() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.ingest("a", batch(1, 1, &[1])).await.unwrap();
        store
            .update_agent("a", |r| {
                r.hwm = 99;
                r.version = "1.2.3".into();
            })
            .unwrap();
        let record = store.agent("a").unwrap().unwrap();
        assert_eq!((record.hwm, record.version.as_str()), (1, "1.2.3"));
    }

    /// Events of `agent` with call ids long enough that a few fill a group.
    fn wide_batch(agent: &str, first: u64, last: u64, skip: &[u64]) -> BatchToStore {
        let events = (first..=last)
            .filter(|s| !skip.contains(s))
            .map(|s| {
                let mut e = event(agent, s, "06");
                let mut decoded = pb::Event::decode(e.bytes.as_slice()).unwrap();
                decoded.call_id = format!("{s:0>300}");
                e.bytes = decoded.encode_to_vec();
                e
            })
            .collect();
        BatchToStore { first_seq: first, last_seq: last, events }
    }

    #[tokio::test]
    async fn batches_are_stored_as_few_bounded_groups_and_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let batch = wide_batch("a", 1, 1000, &[500]);
        let sent: Vec<(u64, Vec<u8>)> = batch.events.iter().map(|e| (e.seq, e.bytes.clone())).collect();
        let outcome = store.ingest("a", batch).await.unwrap();
        assert_eq!((outcome.stored, outcome.lost, outcome.up_to_seq), (999, 1, 1000));
        let groups: Vec<(sled::IVec, sled::IVec)> = store.inner.groups.iter().map(Result::unwrap).collect();
        assert!(groups.len() > 10 && groups.len() < 100, "{} groups for 999 events", groups.len());
        assert!(groups.iter().all(|(_, v)| v.len() <= GROUP_TARGET_BYTES));
        assert!(store.inner.events.is_empty(), "nothing in the first layout's tree");
        // The exact bytes, in seq order, from any starting point.
        let read = store.events_after("a", 0, usize::MAX).unwrap();
        assert_eq!(read.len(), 999);
        for ((seq, event), (sent_seq, bytes)) in read.iter().zip(&sent) {
            assert_eq!((seq, event.encode_to_vec()), (sent_seq, bytes.clone()));
        }
        let from_mid: Vec<u64> = store.events_after("a", 498, 3).unwrap().iter().map(|e| e.0).collect();
        assert_eq!(from_mid, [499, 501, 502]);
    }

    #[tokio::test]
    async fn partial_overlaps_dedup_exactly_across_groups() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.ingest("a", wide_batch("a", 1, 100, &[40])).await.unwrap();
        // A re-sent batch, byte-identical: all duplicates; 40 stays absent.
        let again = store.ingest("a", wide_batch("a", 1, 100, &[])).await.unwrap();
        assert_eq!(again, Ingest { up_to_seq: 100, duplicates: 99, late: 1, ..Ingest::default() });
        // A batch straddling the hwm: the held part is checked, the rest stored.
        let overlap = store.ingest("a", wide_batch("a", 60, 160, &[])).await.unwrap();
        assert_eq!(overlap, Ingest { up_to_seq: 160, stored: 60, duplicates: 41, ..Ingest::default() });
        // One changed event anywhere in a held group is a conflict.
        let mut changed = wide_batch("a", 90, 95, &[]);
        changed.events[3].bytes.push(0);
        assert!(matches!(store.ingest("a", changed).await, Err(StoreError::Conflict { seq: 93, .. })));
        let seqs: Vec<u64> = store.events_after("a", 0, usize::MAX).unwrap().iter().map(|e| e.0).collect();
        assert_eq!(seqs, (1..=160).filter(|&s| s != 40).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_store_of_per_event_keys_is_read_and_deduplicated_against() {
        let dir = tempfile::tempdir().unwrap();
        let old = batch(1, 5, &[1, 2, 3, 5]);
        {
            // What an aggregator of the first layout wrote: one key per event.
            let store = open(dir.path());
            for e in &old.events {
                store.inner.events.insert(event_key("a", e.seq), e.bytes.as_slice()).unwrap();
            }
            let record = AgentRecord { hwm: 5, events_stored: 4, events_lost: 1, ..AgentRecord::default() };
            store.inner.agents.insert("a", encode_record(&record)).unwrap();
            store.sync().await.unwrap();
        }
        let store = open(dir.path());
        assert_eq!(store.resume_point("a").await.unwrap(), 5);
        // Held old events are recognised, changed ones refused.
        let resent = store.ingest("a", batch(3, 8, &[3, 4, 5, 6, 7, 8])).await.unwrap();
        assert_eq!(resent, Ingest { up_to_seq: 8, stored: 3, duplicates: 2, late: 1, ..Ingest::default() });
        let mut changed = batch(2, 2, &[]);
        changed.events.push(event("a", 2, "07"));
        assert!(matches!(store.ingest("a", changed).await, Err(StoreError::Conflict { seq: 2, .. })));
        // Readers see both layouts as one sequence.
        let held = store.events_after("a", 0, 100).unwrap();
        assert_eq!(held.iter().map(|e| e.0).collect::<Vec<_>>(), [1, 2, 3, 5, 6, 7, 8]);
        assert_eq!(held[2].1.encode_to_vec(), old.events[2].bytes);
        assert_eq!(store.events_after("a", 2, 3).unwrap().iter().map(|e| e.0).collect::<Vec<_>>(), [3, 5, 6]);
    }

    #[test]
    fn a_second_opener_is_refused_not_quarantined() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let err = Store::open(&dir.path().join("store"), callkpi_durable::DEFAULT_CACHE_BYTES).unwrap_err();
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
        assert!(store.quarantined().is_none());
        drop(store);
        assert!(open(dir.path()).quarantined().is_none());
    }
}
