//! What the KPI engine keeps on disk, so that its memory and its restart
//! time follow the open window, never the history: per-quarter-hour
//! rollups of sealed contributions, an index of sealed calls, and a
//! snapshot of the open window, all in the store's `kpi` tree.
//!
//! Keys (one tree, so that a checkpoint is one atomic batch):
//! - `r` + bucket + cell key -> the cell's counters (sealed contributions,
//!   summed). Bucket first: a report reads the buckets of its range only.
//! - `c` + first event time + site + call id -> the sealed call: its record
//!   (for `ListCalls`) and where its events are (for `GetCall` and for a
//!   late event that reopens it). Newest first is a reverse scan.
//! - `k` + call id + site -> first event time (finds a call by id).
//! - `s` -> the engine's open window and the follower's position, as of
//!   the last checkpoint.
//! - `e` -> calls that started before this were removed by retention.
//!
//! Values are MessagePack with named fields (rmp-serde): counters that are
//! zero are left out and missing ones read as zero, so what is stored
//! today still reads after fields are added.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use callkpi_core::call::CallRecord;
use callkpi_core::counters::{CounterSet, Counters, FineKey};
use callkpi_core::engine::{Neighbours, Sealed};
use callkpi_core::event::{Event, UnixNanos};
use callkpi_core::time::{BUCKET_NS, bucket_of};
use callkpi_core::{Engine, EngineConfig};
use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError};

const SNAPSHOT_KEY: &[u8] = b"s";
/// Start time below which retention removed sealed calls from the index.
const EXPIRED_KEY: &[u8] = b"e";
/// Format of the snapshot; another one is not read (the follower then
/// rebuilds its open window from the raw events).
const SNAPSHOT_FORMAT: u32 = 1;

/// A sealed call in the index.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SealedEntry {
    /// Its final record.
    pub(crate) record: CallRecord,
    /// Where its events are: (agent id, seq).
    pub(crate) events: Vec<(String, u64)>,
    /// Its contact's neighbours when it left the caller's window.
    #[serde(default)]
    pub(crate) evicted: Option<Neighbours>,
}

/// The follower's state at a checkpoint.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Snapshot {
    format: u32,
    pub(crate) engine: Engine,
    /// Highest seq applied per agent.
    pub(crate) applied: HashMap<String, u64>,
    /// KPI time of the last event applied per agent.
    pub(crate) last_kpi_time: HashMap<String, i64>,
    /// Stored events that did not convert.
    pub(crate) undecodable: u64,
}

impl Snapshot {
    /// A start from nothing.
    pub(crate) fn empty(engine: Engine) -> Self {
        Self { format: SNAPSHOT_FORMAT, engine, ..Self::default() }
    }
}

/// The same, borrowed from the follower for writing.
#[derive(Debug, Serialize)]
pub(crate) struct SnapshotRef<'a> {
    format: u32,
    engine: &'a Engine,
    applied: &'a HashMap<String, u64>,
    last_kpi_time: &'a HashMap<String, i64>,
    undecodable: u64,
}

impl<'a> SnapshotRef<'a> {
    pub(crate) fn new(
        engine: &'a Engine,
        applied: &'a HashMap<String, u64>,
        last_kpi_time: &'a HashMap<String, i64>,
        undecodable: u64,
    ) -> Self {
        Self { format: SNAPSHOT_FORMAT, engine, applied, last_kpi_time, undecodable }
    }
}

/// What one checkpoint wrote.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Written {
    pub(crate) calls_sealed: usize,
    pub(crate) calls_reopened: usize,
    pub(crate) cells: usize,
}

/// The KPI part of the store.
#[derive(Clone, Debug)]
pub(crate) struct KpiStore {
    store: Store,
    /// Seqlock over the rollups: odd while a checkpoint is being applied,
    /// bumped again when it is. A reader that saw the same even value
    /// before and after reading rollups read one checkpoint's state.
    generation: Arc<AtomicU64>,
}

fn sortable(t: i64) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

fn unsortable(b: &[u8]) -> Option<i64> {
    Some((u64::from_be_bytes(b.get(..8)?.try_into().ok()?) ^ (1 << 63)) as i64)
}

fn push_str(key: &mut Vec<u8>, s: &str) {
    // Length-prefixed, so that no byte of a site or call id can be mistaken
    // for a separator.
    key.extend_from_slice(&u32::try_from(s.len()).unwrap_or(u32::MAX).to_be_bytes());
    key.extend_from_slice(s.as_bytes());
}

fn call_key(first: UnixNanos, site: &str, call_id: &str) -> Vec<u8> {
    let mut k = vec![b'c'];
    k.extend_from_slice(&sortable(first));
    push_str(&mut k, site);
    push_str(&mut k, call_id);
    k
}

fn id_prefix(call_id: &str) -> Vec<u8> {
    let mut k = vec![b'k'];
    push_str(&mut k, call_id);
    k
}

fn id_key(call_id: &str, site: &str) -> Vec<u8> {
    let mut k = id_prefix(call_id);
    push_str(&mut k, site);
    k
}

fn rollup_prefix(bucket: UnixNanos) -> Vec<u8> {
    let mut k = vec![b'r'];
    k.extend_from_slice(&sortable(bucket));
    k
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    rmp_serde::to_vec_named(v).map_err(|e| StoreError::KpiState { what: "encoding".into(), reason: e.to_string() })
}

fn decode<'a, T: Deserialize<'a>>(what: &str, v: &'a [u8]) -> Result<T, StoreError> {
    rmp_serde::from_slice(v).map_err(|e| StoreError::KpiState { what: what.into(), reason: e.to_string() })
}

impl KpiStore {
    pub(crate) fn new(store: Store) -> Self {
        Self { store, generation: Arc::new(AtomicU64::new(0)) }
    }

    /// The rollups' generation (see the field): even when stable.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn tree(&self) -> &sled::Tree {
        self.store.kpi_tree()
    }

    /// The snapshot of the last checkpoint, under `cfg`; `None` when there
    /// is none or it is of another format.
    ///
    /// # Errors
    /// When sled fails.
    pub(crate) fn load(&self, cfg: EngineConfig) -> Result<Option<Snapshot>, StoreError> {
        let Some(v) = self.tree().get(SNAPSHOT_KEY)? else { return Ok(None) };
        match decode::<Snapshot>("KPI snapshot", &v) {
            Ok(mut s) if s.format == SNAPSHOT_FORMAT => {
                s.engine = std::mem::take(&mut s.engine).restored(cfg);
                Ok(Some(s))
            }
            Ok(s) => {
                tracing::warn!(format = s.format, "KPI snapshot of another format; rebuilding the open window.");
                Ok(None)
            }
            Err(error) => {
                tracing::warn!(%error, "KPI snapshot unreadable; rebuilding the open window.");
                Ok(None)
            }
        }
    }

    /// Whether anything was ever written (rollups or sealed calls).
    ///
    /// # Errors
    /// When sled fails.
    pub(crate) fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.tree().first()?.is_none())
    }

    /// Removes every rollup, sealed call and snapshot (before a rebuild
    /// from the raw events). Blocking.
    ///
    /// # Errors
    /// When sled fails.
    pub(crate) fn clear(&self) -> Result<(), StoreError> {
        tracing::warn!("KPI rollups and sealed-call index cleared: rebuilding them from the raw events.");
        self.tree().clear()?;
        self.store.sync_blocking()
    }

    /// Writes what was sealed and the snapshot in one atomic batch, then
    /// syncs. Blocking.
    ///
    /// # Errors
    /// When sled fails.
    pub(crate) fn checkpoint(&self, sealed: Sealed, snapshot: &SnapshotRef<'_>) -> Result<Written, StoreError> {
        let tree = self.tree();
        let mut batch = sled::Batch::default();
        let mut written = Written { cells: sealed.delta.0.len(), ..Written::default() };
        for (key, delta) in &sealed.delta.0 {
            let mut k = rollup_prefix(key.bucket);
            k.extend_from_slice(&encode(key)?);
            let mut cell: Counters = match tree.get(&k)? {
                Some(v) => decode("rollup cell", &v)?,
                None => Counters::default(),
            };
            cell.add(delta, 1);
            if cell.is_zero() {
                batch.remove(k);
            } else {
                batch.insert(k, encode(&cell)?);
            }
        }
        // Reopened calls leave the index (a later key for the same call wins
        // within the batch, so one reopened and sealed again stays).
        for (site, call_id, first) in &sealed.unsealed {
            batch.remove(call_key(*first, site, call_id));
            batch.remove(id_key(call_id, site));
            written.calls_reopened += 1;
        }
        let mut entries: HashMap<(String, String), (UnixNanos, SealedEntry)> = HashMap::new();
        for c in sealed.calls {
            let events = c.events.iter().map(|e| (e.id.agent_id.clone(), e.id.seq)).collect();
            let key = (c.record.site.clone(), c.record.call_id.clone());
            entries.insert(key, (c.record.first, SealedEntry { record: c.record, events, evicted: None }));
            written.calls_sealed += 1;
        }
        for ev in sealed.evicted {
            let key = (ev.site, ev.call_id);
            if let Some((_, e)) = entries.get_mut(&key) {
                e.evicted = Some(ev.neighbours);
            } else if let Some((first, mut e)) = self.sealed_call(&key.0, &key.1)? {
                e.evicted = Some(ev.neighbours);
                entries.insert(key, (first, e));
            }
        }
        for ((site, call_id), (first, entry)) in &entries {
            batch.insert(call_key(*first, site, call_id), encode(entry)?);
            batch.insert(id_key(call_id, site), sortable(*first).to_vec());
        }
        batch.insert(SNAPSHOT_KEY, encode(snapshot)?);
        self.generation.fetch_add(1, Ordering::AcqRel);
        let applied = tree.apply_batch(batch);
        self.generation.fetch_add(1, Ordering::AcqRel);
        applied?;
        self.store.sync_blocking()?;
        Ok(written)
    }

    /// The rollups of the buckets that overlap `[from, to)`. Blocking.
    ///
    /// # Errors
    /// When sled fails or a cell does not decode.
    pub(crate) fn rollups(&self, from: UnixNanos, to: UnixNanos) -> Result<CounterSet, StoreError> {
        let mut set = CounterSet::default();
        // "Unbounded" comes as i64::MIN/MAX: keep bucket arithmetic in range.
        let (from, to) = (from.max(i64::MIN / 2), to.min(i64::MAX / 2));
        if from >= to {
            return Ok(set);
        }
        let lo = rollup_prefix(bucket_of(from));
        let hi = rollup_prefix(bucket_of(to.saturating_sub(1)).saturating_add(BUCKET_NS));
        for kv in self.tree().range(lo..hi) {
            let (k, v) = kv?;
            let key: FineKey = decode("rollup key", &k[9..])?;
            let cell: Counters = decode("rollup cell", &v)?;
            set.0.insert(key, cell);
        }
        Ok(set)
    }

    /// A sealed call by site and id.
    ///
    /// # Errors
    /// When sled fails or the entry does not decode.
    pub(crate) fn sealed_call(
        &self,
        site: &str,
        call_id: &str,
    ) -> Result<Option<(UnixNanos, SealedEntry)>, StoreError> {
        let Some(first) = self.tree().get(id_key(call_id, site))? else { return Ok(None) };
        let Some(first) = unsortable(&first) else { return Ok(None) };
        match self.tree().get(call_key(first, site, call_id))? {
            Some(v) => Ok(Some((first, decode("sealed call", &v)?))),
            None => Ok(None),
        }
    }

    /// Sites at which a call id was sealed.
    ///
    /// # Errors
    /// When sled fails.
    pub(crate) fn sealed_sites(&self, call_id: &str) -> Result<Vec<String>, StoreError> {
        let prefix = id_prefix(call_id);
        let mut out = Vec::new();
        for k in self.tree().scan_prefix(&prefix).keys() {
            let k = k?;
            let rest = &k[prefix.len()..];
            if rest.len() >= 4 {
                out.push(String::from_utf8_lossy(&rest[4..]).into_owned());
            }
        }
        Ok(out)
    }

    /// Sealed calls whose first event is in `[from, to)`, newest first,
    /// strictly before `before` (start, site, call id) when given.
    pub(crate) fn calls_newest_first(
        &self,
        from: UnixNanos,
        to: UnixNanos,
        before: Option<(UnixNanos, &str, &str)>,
    ) -> impl Iterator<Item = Result<CallRecord, StoreError>> + '_ {
        let lo = call_key(from, "", "");
        let hi = match before {
            Some((t, site, id)) if t < to => call_key(t, site, id),
            _ => call_key(to, "", ""),
        };
        let range = if lo < hi { Some(self.tree().range(lo..hi)) } else { None };
        range.into_iter().flatten().rev().map(|kv| {
            let (_, v) = kv?;
            Ok(decode::<SealedEntry>("sealed call", &v)?.record)
        })
    }

    /// Deletes sealed calls that started before `before_ns` from the index
    /// (their rollups stay), at most `limit`; remembers the bound for
    /// [`KpiStore::expired_before`]. Returns how many. Blocking.
    ///
    /// # Errors
    /// When sled fails.
    pub(crate) fn expire_calls(&self, before_ns: UnixNanos, limit: usize) -> Result<usize, StoreError> {
        let tree = self.tree();
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for kv in tree.range(call_key(i64::MIN, "", "")..call_key(before_ns, "", "")).take(limit) {
            let (k, v) = kv?;
            let entry: SealedEntry = decode("sealed call", &v)?;
            batch.remove(k);
            batch.remove(id_key(&entry.record.call_id, &entry.record.site));
            n += 1;
        }
        if n > 0 {
            let floor = self.expired_before()?.unwrap_or(i64::MIN).max(before_ns);
            batch.insert(EXPIRED_KEY, sortable(floor).to_vec());
            tree.apply_batch(batch)?;
        }
        Ok(n)
    }

    /// Calls that started before this were removed from the index by retention.
    ///
    /// # Errors
    /// When sled fails.
    pub(crate) fn expired_before(&self) -> Result<Option<UnixNanos>, StoreError> {
        Ok(self.tree().get(EXPIRED_KEY)?.and_then(|v| unsortable(&v)))
    }

    /// The events of a sealed call, read back from the raw store.
    ///
    /// # Errors
    /// When sled fails; events that are gone (retention) are left out.
    pub(crate) fn events_of(&self, entry: &SealedEntry) -> Result<Vec<Event>, StoreError> {
        let mut out = Vec::with_capacity(entry.events.len());
        for (agent, seq) in &entry.events {
            if let Some(wire) = self.store.event_at(agent, *seq)? {
                match Event::try_from(wire) {
                    Ok(ev) => out.push(ev),
                    Err(error) => {
                        tracing::warn!(%agent, seq, %error, "Stored event of a sealed call does not convert.")
                    }
                }
            }
        }
        Ok(out)
    }
}
