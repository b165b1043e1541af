//! sled, opened the way the agent's spool and the aggregator's store need it.
//!
//! Both keep data that must survive a power cut once it has been
//! acknowledged, and both must start whatever state the disk is in. sled
//! 0.34 gets two things wrong for that, which this crate fixes once:
//!
//! - **`flush()` is not an fsync on Linux.** sled writes its log with
//!   `pwrite` then `sync_file_range(WAIT_BEFORE|WRITE|WAIT_AFTER)` (see
//!   `pagecache/iobuf.rs`, sled issue 1452). That pushes the pages to the
//!   device but neither flushes the device's write cache nor persists the
//!   file's metadata (its new length), so a power cut can still lose
//!   "flushed" data. Worse, a log item larger than about 128 KiB (a big
//!   value, or a leaf node holding many values when sled rewrites it) goes
//!   to its own file under `blobs/`, written with no sync at all.
//!   [`Durable::sync`] calls `flush()`, then `fdatasync` on every blob file
//!   not yet synced and on the `blobs` directory, then on sled's data file.
//!   Data written before a returned `sync()` survives a power cut; data
//!   after it may not.
//! - **A corrupt or truncated store makes `open` fail** (or panic inside
//!   sled). [`Durable::open`] then moves the directory aside to
//!   `<dir>.quarantine-<unix seconds>` and starts an empty store, so the
//!   service starts and says so; the quarantined copy is kept for an
//!   operator to inspect. A store that is only locked by a running process
//!   is refused with [`DurableError::InUse`] (after waiting up to 2 s for a
//!   just-closed one to release its lock) and never moved.
//!
//! The cache is small by default ([`DEFAULT_CACHE_BYTES`]), not sled's 1 GiB:
//! an agent runs on appliances with little RAM. It is not a bound, though:
//! sled 0.34 splits its LRU into 256 shards (by page id) and a shard only
//! evicts once 64 accesses to it have queued up, so in a store of a few
//! thousand pages a page read once (by a scan, a cold read, or sled's own
//! segment cleaning, which rewrites old pages as new ones are written)
//! stays in memory. Callers should avoid reading what they do not need:
//! the spool keeps its counts in a meta key instead of scanning at open.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Default page cache: 8 MiB.
pub const DEFAULT_CACHE_BYTES: u64 = 8 * 1024 * 1024;

/// Errors opening or syncing a store.
#[derive(Debug, thiserror::Error)]
pub enum DurableError {
    /// sled failed.
    #[error("sled store {path}: {source}")]
    Sled {
        /// Store directory.
        path: PathBuf,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// Another process (or another handle in this one) has the store open.
    #[error("store {path} is in use by another process: {reason}")]
    InUse {
        /// Store directory.
        path: PathBuf,
        /// sled's message.
        reason: String,
    },
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// File or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// An open store and what opening it took.
#[derive(Debug)]
pub struct Opened {
    /// The store.
    pub store: Durable,
    /// Where a corrupt previous store was moved, if it was.
    pub quarantined: Option<PathBuf>,
}

/// Why sled would not open a store.
enum OpenFailure {
    /// The contents cannot be read: quarantine.
    Unreadable(String),
    /// Anything else (locked, permissions): leave the store alone.
    Other(sled::Error),
}

impl OpenFailure {
    fn classify(e: sled::Error) -> Self {
        match e {
            sled::Error::Io(ref io)
                if !matches!(io.kind(), std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData) =>
            {
                OpenFailure::Other(e)
            }
            other => OpenFailure::Unreadable(other.to_string()),
        }
    }
}

/// How long [`Durable::open`] waits for a store's lock to be released.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

/// sled reports a held lock as a plain I/O error with this text.
fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

fn source_error(dir: &Path, e: sled::Error) -> DurableError {
    match e {
        e if is_lock_error(&e) => DurableError::InUse { path: dir.to_owned(), reason: e.to_string() },
        source => DurableError::Sled { path: dir.to_owned(), source },
    }
}

/// A sled database with a real durability point.
#[derive(Debug, Clone)]
pub struct Durable {
    db: sled::Db,
    path: PathBuf,
    /// Blob files already synced (sled never rewrites a blob in place).
    synced_blobs: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<std::ffi::OsString>>>,
}

/// An error and its causes on one line, each cause once, as the binaries
/// print a failure. Many errors here and in the libraries below (sled,
/// tonic, std) repeat their source in their own message, so `{:#}` would
/// say "No such file or directory (os error 2): No such file or directory
/// (os error 2)"; a cause whose text was already said is left out.
pub fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut cause = Some(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// Whether a store could live at `dir`: an existing directory we can write
/// in, or a path whose nearest existing ancestor is a directory we can
/// create it in. For `validate` commands, so that a path `open` would fail
/// on is reported before a service starts (and restarts, and restarts).
/// Writing is tested by creating and removing a probe file: permission bits
/// say nothing of read-only mounts, ACLs or root.
///
/// # Errors
/// One sentence saying why not.
pub fn check_writable_dir(dir: &Path) -> Result<(), String> {
    let mut existing = dir;
    while !existing.exists() {
        match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => existing = p,
            _ => {
                existing = Path::new(".");
                break;
            }
        }
    }
    if !existing.is_dir() {
        return Err(format!("{} is not a directory", existing.display()));
    }
    // Unique per call: two checks of one directory may run at once.
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = existing.join(format!(".callkpi-write-test-{}-{n}", std::process::id()));
    match std::fs::OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) if existing == dir => Err(format!("cannot write in {}: {e}", dir.display())),
        Err(e) => Err(format!("cannot create {}: {} is not writable: {e}", dir.display(), existing.display())),
    }
}

impl Durable {
    /// Opens (or creates) the store in `dir`, quarantining it if it cannot be opened.
    ///
    /// # Errors
    /// When the directory cannot be created or moved, or a fresh store cannot be opened.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Opened, DurableError> {
        // A store closed an instant ago (a restart, or a test reopening it)
        // keeps its lock until sled's background flusher exits: wait briefly
        // for it before calling the store in use.
        let deadline = std::time::Instant::now() + LOCK_PATIENCE;
        let mut attempt = Self::try_open(dir, cache_bytes);
        while matches!(&attempt, Err(OpenFailure::Other(e)) if is_lock_error(e)) && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(20));
            attempt = Self::try_open(dir, cache_bytes);
        }
        match attempt {
            Ok(store) => Ok(Opened { store, quarantined: None }),
            // Only unreadable contents are moved aside: a store that is merely
            // locked or not accessible is somebody's live data.
            Err(OpenFailure::Other(source)) => Err(source_error(dir, source)),
            Err(OpenFailure::Unreadable(reason)) => {
                let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
                let mut aside = dir.as_os_str().to_owned();
                aside.push(format!(".quarantine-{secs}"));
                let aside = PathBuf::from(aside);
                tracing::error!(path = %dir.display(), quarantine = %aside.display(), %reason, "Store is unreadable; moved aside, starting empty.");
                std::fs::rename(dir, &aside).map_err(|source| DurableError::Io {
                    what: "quarantining",
                    path: dir.to_owned(),
                    source,
                })?;
                let store = Self::try_open(dir, cache_bytes).map_err(|f| match f {
                    OpenFailure::Other(source) => source_error(dir, source),
                    OpenFailure::Unreadable(reason) => DurableError::Io {
                        what: "opening a fresh store after quarantine",
                        path: dir.to_owned(),
                        source: std::io::Error::other(reason),
                    },
                })?;
                Ok(Opened { store, quarantined: Some(aside) })
            }
        }
    }

    fn try_open(dir: &Path, cache_bytes: u64) -> Result<Durable, OpenFailure> {
        let cfg = sled::Config::new().path(dir).cache_capacity(cache_bytes).mode(sled::Mode::LowSpace);
        // sled 0.34 panics on some corrupt inputs instead of returning Corruption.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || cfg.open()))
            .map_err(|_| OpenFailure::Unreadable("sled panicked while opening".to_owned()))?;
        let db = opened.map_err(OpenFailure::classify)?;
        let store = Durable { db, path: dir.to_owned(), synced_blobs: Default::default() };
        // Make the files' creation itself durable.
        store.sync().map_err(|e| OpenFailure::Unreadable(e.to_string()))?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(store)
    }

    /// The sled database.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Store directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The durability point: everything written before this returns `Ok`
    /// survives a crash or power cut.
    ///
    /// # Errors
    /// When sled or the fsync fails; then nothing written since the last
    /// successful `sync` may be considered durable.
    pub fn sync(&self) -> Result<(), DurableError> {
        self.db.flush().map_err(|source| DurableError::Sled { path: self.path.clone(), source })?;
        self.sync_blobs()?;
        let data = self.path.join("db");
        // fdatasync through any descriptor of the file flushes the file's
        // data and the metadata needed to read it back (its length).
        let f = File::open(&data).map_err(|source| DurableError::Io {
            what: "opening for fsync",
            path: data.clone(),
            source,
        })?;
        f.sync_data().map_err(|source| DurableError::Io { what: "fsync", path: data, source })
    }

    /// Syncs blob files written since the last sync, and the directory that
    /// names them, before the log that points at them.
    fn sync_blobs(&self) -> Result<(), DurableError> {
        let dir = self.path.join("blobs");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(DurableError::Io { what: "listing", path: dir, source }),
        };
        let mut synced = self.synced_blobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut present = std::collections::HashSet::new();
        let mut new_blobs = false;
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name();
            if !synced.contains(&name) {
                let path = entry.path();
                // A blob sled garbage-collected meanwhile needs no sync.
                if let Ok(f) = File::open(&path) {
                    f.sync_data().map_err(|source| DurableError::Io { what: "fsync", path, source })?;
                    new_blobs = true;
                }
            }
            present.insert(name);
        }
        *synced = present;
        if new_blobs && let Ok(d) = File::open(&dir) {
            d.sync_all().map_err(|source| DurableError::Io { what: "fsync", path: dir, source })?;
        }
        Ok(())
    }

    /// Bytes the store takes on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

/// Group frames: several records of consecutive sequence numbers in one
/// sled value, because sled 0.34 spends several microseconds per key
/// whatever its size (and clones the whole leaf node on every insert).
///
/// A frame is a version byte ([`frame::VERSION`]), then, for each record in
/// increasing seq order, the gap to the previous record's seq (0 for the
/// first, whose seq is the frame's key), the length of the record and its
/// bytes; gap and length are LEB128 varints. The next record's seq is the
/// previous + 1 + gap. The agent's spool writes the same format.
pub mod frame {
    /// First byte of every frame.
    pub const VERSION: u8 = 1;

    /// Where one record of a parsed frame lies.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Entry {
        /// Its seq.
        pub seq: u64,
        /// Start of its bytes in the frame.
        pub start: usize,
        /// End (exclusive) of its bytes in the frame.
        pub end: usize,
    }

    fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            buf.push((v & 0x7f) as u8 | 0x80);
            v >>= 7;
        }
        buf.push(v as u8);
    }

    fn varint_len(v: u64) -> usize {
        (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
    }

    fn take_varint(input: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = input.split_first()?;
            *input = rest;
            if shift == 63 && b > 1 {
                return None;
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    /// Cuts records, pushed in strictly increasing seq order, into frames of
    /// at most `target` bytes (a record larger than that gets a frame of its
    /// own), one record at a time.
    #[derive(Debug)]
    pub struct Builder {
        target: usize,
        frames: Vec<(u64, Vec<u8>)>,
        buf: Vec<u8>,
        first: u64,
        prev: u64,
    }

    impl Builder {
        /// A builder of frames of at most `target` bytes.
        pub fn new(target: usize) -> Self {
            Self { target, frames: Vec::new(), buf: Vec::new(), first: 0, prev: 0 }
        }

        /// Seq of the last record of the frame being built, if one is.
        pub fn open_last_seq(&self) -> Option<u64> {
            (!self.buf.is_empty()).then_some(self.prev)
        }

        /// Appends a record, closing the current frame first when the record
        /// would take it past the target.
        ///
        /// # Panics
        /// When `seq` is not above the previous record's.
        pub fn push(&mut self, seq: u64, record: &[u8]) {
            let len = record.len() as u64;
            if !self.buf.is_empty() {
                assert!(seq > self.prev, "frame records must have increasing seqs");
                let gap = seq - self.prev - 1;
                if self.buf.len() + varint_len(gap) + varint_len(len) + record.len() > self.target {
                    self.close();
                }
            }
            let gap = if self.buf.is_empty() {
                self.buf.reserve(self.target.min(1 << 20).max(record.len() + 21));
                self.buf.push(VERSION);
                self.first = seq;
                0
            } else {
                seq - self.prev - 1
            };
            put_varint(&mut self.buf, gap);
            put_varint(&mut self.buf, len);
            self.buf.extend_from_slice(record);
            self.prev = seq;
        }

        /// Ends the frame being built; the next record starts a new one.
        pub fn close(&mut self) {
            if !self.buf.is_empty() {
                self.frames.push((self.first, std::mem::take(&mut self.buf)));
            }
        }

        /// Every frame, as `(first seq, frame)` pairs in seq order.
        pub fn finish(mut self) -> Vec<(u64, Vec<u8>)> {
            self.close();
            self.frames
        }
    }

    /// [`Builder`] over all of `records` at once.
    ///
    /// # Panics
    /// When seqs do not strictly increase.
    pub fn build<'a>(records: impl IntoIterator<Item = (u64, &'a [u8])>, target: usize) -> Vec<(u64, Vec<u8>)> {
        let mut builder = Builder::new(target);
        for (seq, record) in records {
            builder.push(seq, record);
        }
        builder.finish()
    }

    /// The records of a frame whose first record is at `first`; `None`
    /// unless it is well formed: known version, at least one record, the
    /// first at `first`, nothing left over.
    pub fn parse(first: u64, frame: &[u8]) -> Option<Vec<Entry>> {
        let (&VERSION, mut rest) = frame.split_first()? else { return None };
        let mut entries = Vec::new();
        let mut seq = first;
        while !rest.is_empty() {
            let gap = take_varint(&mut rest)?;
            seq = if entries.is_empty() {
                if gap != 0 {
                    return None;
                }
                first
            } else {
                seq.checked_add(gap)?.checked_add(1)?
            };
            let len = usize::try_from(take_varint(&mut rest)?).ok()?;
            if len > rest.len() {
                return None;
            }
            let start = frame.len() - rest.len();
            entries.push(Entry { seq, start, end: start + len });
            rest = &rest[len..];
        }
        if entries.is_empty() { None } else { Some(entries) }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn varints_round_trip_and_overlong_ones_are_refused() {
            let mut v = Vec::new();
            for n in [0, 1, 127, 128, 300, u64::MAX] {
                v.clear();
                put_varint(&mut v, n);
                assert_eq!(v.len(), varint_len(n));
                assert_eq!(take_varint(&mut v.as_slice()), Some(n));
            }
            assert_eq!(take_varint(&mut &[0xff; 10][..]), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writable_dirs_are_told_from_impossible_ones() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(check_writable_dir(tmp.path()), Ok(()));
        assert_eq!(check_writable_dir(&tmp.path().join("a/b/store")), Ok(()), "created at open");
        assert!(std::fs::read_dir(tmp.path()).unwrap().next().is_none(), "no probe left behind");
        let file = tmp.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let err = check_writable_dir(&file.join("store")).unwrap_err();
        assert!(err.contains("is not a directory"), "{err}");
        // /proc refuses new files even to root.
        let err = check_writable_dir(Path::new("/proc/forbidden/store")).unwrap_err();
        assert!(err.starts_with("cannot create /proc/forbidden/store: /proc is not writable"), "{err}");
    }

    #[test]
    fn frames_round_trip_with_gaps_and_stay_under_their_target() {
        let records: Vec<(u64, Vec<u8>)> =
            [1u64, 2, 3, 7, 8, 300, 301].iter().map(|&s| (s, vec![s as u8; 30 + (s % 7) as usize])).collect();
        let big = (400u64, vec![9u8; 500]);
        let all: Vec<(u64, &[u8])> =
            records.iter().chain(std::iter::once(&big)).map(|(s, v)| (*s, v.as_slice())).collect();
        let frames = frame::build(all.iter().copied(), 100);
        assert!(frames.len() > 2);
        let mut back = Vec::new();
        for (first, f) in &frames {
            assert!(f.len() <= 100 || f.len() > 500, "only a record larger than the target exceeds it");
            for e in frame::parse(*first, f).expect("parses") {
                back.push((e.seq, &f[e.start..e.end]));
            }
        }
        assert_eq!(back, all);
        // Damage is refused, never misread.
        let (first, f) = &frames[0];
        assert!(frame::parse(*first, &f[..f.len() - 1]).is_none());
        assert!(frame::parse(*first, &[]).is_none());
        assert!(frame::parse(*first, &[frame::VERSION]).is_none());
        assert!(frame::parse(*first, &[frame::VERSION, 1, 0]).is_none(), "first gap must be 0");
        assert!(frame::parse(*first, &[2, 0, 0]).is_none(), "unknown version");
        assert!(frame::parse(u64::MAX, &[frame::VERSION, 0, 0, 0, 0]).is_none(), "seq overflow");
    }

    #[test]
    fn data_survives_reopen_after_sync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        {
            let o = Durable::open(&path, DEFAULT_CACHE_BYTES).unwrap();
            assert!(o.quarantined.is_none());
            o.store.db().insert(b"k", b"v").unwrap();
            o.store.sync().unwrap();
        }
        let o = Durable::open(&path, DEFAULT_CACHE_BYTES).unwrap();
        assert_eq!(o.store.db().get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
    }

    #[test]
    fn large_values_go_to_blobs_and_survive_reopen_after_sync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let big = vec![0x42u8; 300 * 1024];
        {
            let o = Durable::open(&path, DEFAULT_CACHE_BYTES).unwrap();
            o.store.db().insert(b"big", big.clone()).unwrap();
            o.store.sync().unwrap();
            let blobs = std::fs::read_dir(path.join("blobs")).unwrap().count();
            assert!(blobs > 0, "sled wrote the value as a blob file");
            assert!(!o.store.synced_blobs.lock().unwrap().is_empty(), "and sync covered it");
        }
        let o = Durable::open(&path, DEFAULT_CACHE_BYTES).unwrap();
        assert_eq!(o.store.db().get(b"big").unwrap().as_deref(), Some(&big[..]));
    }

    #[test]
    fn a_store_in_use_is_refused_not_quarantined() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let first = Durable::open(&path, DEFAULT_CACHE_BYTES).unwrap();
        first.store.db().insert(b"k", b"v").unwrap();
        first.store.sync().unwrap();
        let err = Durable::open(&path, DEFAULT_CACHE_BYTES).unwrap_err();
        assert!(matches!(err, DurableError::InUse { .. }), "{err}");
        assert_eq!(first.store.db().get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
        let siblings = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(siblings, 1, "nothing was moved aside");
    }

    #[test]
    fn corrupt_store_is_quarantined_and_a_fresh_one_opens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        {
            let o = Durable::open(&path, DEFAULT_CACHE_BYTES).unwrap();
            for i in 0u32..2000 {
                o.store.db().insert(i.to_be_bytes(), vec![7u8; 100]).unwrap();
            }
            o.store.sync().unwrap();
        }
        // Overwrite the store's config and data headers with garbage.
        for name in ["conf", "db"] {
            let p = path.join(name);
            let len = std::fs::metadata(&p).unwrap().len() as usize;
            std::fs::write(&p, vec![0xA5u8; len.min(4096)]).unwrap();
        }
        let o = Durable::open(&path, DEFAULT_CACHE_BYTES).unwrap();
        let aside = o.quarantined.expect("quarantined");
        assert!(aside.exists());
        assert!(o.store.db().is_empty());
        o.store.db().insert(b"k", b"v").unwrap();
        o.store.sync().unwrap();
    }
}
