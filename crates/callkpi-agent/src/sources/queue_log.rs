//! Tails an Asterisk `queue_log` file: every complete line exactly once,
//! across appends, rotations, truncations and agent restarts.
//!
//! # Checkpoint
//!
//! Stored in the spool under `queue_log:<source name>`, in the same sled
//! batch as the events it covers, so that after a crash the source resumes
//! exactly after the last event stored. Layout (little-endian, 27 bytes):
//!
//! | bytes | field |
//! |---|---|
//! | 0 | version, `1` |
//! | 1..9 | inode of the file |
//! | 9..17 | byte offset: the next line starts here |
//! | 17..19 | `n`: how many bytes from the start of the file are fingerprinted (`min(offset, 256)`) |
//! | 19..27 | FNV-1a 64 of those `n` bytes |
//!
//! At start the checkpoint is trusted when the file at `path` still has
//! `offset` bytes and its first `n` bytes hash the same (whatever its inode:
//! a restored backup or a `copytruncate` keeps the content). Otherwise the
//! file was replaced or rewritten while the agent was stopped and is read
//! from 0 (logged at WARN: lines written to the old file after the checkpoint
//! were not seen).
//!
//! # Following the file
//!
//! The source is woken by the file system: an inotify watch (the `notify`
//! crate) on the file's directory reports writes, creations and renames of
//! the file and of its rotated names (those starting with its name). The
//! file is also polled every `poll_interval_ms`, which is all there is on a
//! file system without inotify (NFS, some bind mounts) or when the watch
//! cannot be set up. At each EOF the source compares the open handle with
//! `path`:
//! - **rotation** (`path` now names another inode): the old file is kept
//!   open and read by its descriptor until it has been quiet (not grown) for
//!   `rotate_wait_ms`: Asterisk goes on writing to the renamed file until
//!   `logger reload` makes it reopen the path (Debian's logrotate `create`
//!   then `postrotate`). Then an unterminated last line is mapped as
//!   complete and the new file is read from 0, so the old file's lines
//!   always get lower seqs than the new file's. Fluent Bit's `Rotate_Wait`
//!   and Filebeat's `close_inactive` do the same;
//! - **truncation** (the handle's size is below the read position, or the
//!   first bytes changed): read again from 0;
//! - `path` missing (between a rename and Asterisk's reopen): keep reading
//!   the old handle and wait.
//!
//! When the agent was stopped across a rotation, the checkpoint names the
//! old inode: at start that inode is searched for among the files of the
//! same directory, and when one has it (with the checkpoint's fingerprint)
//! it is finished from the checkpoint's offset, as above, before the new
//! file is read.
//!
//! Events and the new checkpoint go to the spool in one submit
//! (`replayable = true`). When the spool answers [`AppendOutcome::Full`]
//! the same chunk is retried after a pause, never skipped: reading stops
//! while the aggregator is unreachable and the spool is at its cap, and
//! resumes where it stopped.
//!
//! # What can still be lost
//!
//! Lines appended to a rotated file after `rotate_wait_ms` of quiet, or
//! after it was compressed or moved to another directory while the agent
//! was stopped (its inode is then not found); a file rotated twice within
//! one poll interval while no notification arrives (the middle file is never
//! opened).

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::Watcher as _;
use tokio::sync::Notify;

use callkpi_core::event::SourceKind;
use callkpi_feeds::FeedEvent;
use callkpi_feeds::queue_log::{InputForm, QueueLogConfig, QueueLogMapper};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, debug, error, info, info_span, warn};

use super::{EventSink, EventsCaptured, EventsSpooled, InternalEvent as _, UnparsedCounts};
use crate::clock::Clock;
use crate::config::QueueLogSourceConfig;
use crate::metrics::SourceMetrics;
use crate::spool::{AppendOutcome, SpoolInput};

/// Bytes of the start of the file the checkpoint fingerprints.
const FINGERPRINT_BYTES: u64 = 256;
/// Checkpoint layout version.
const CHECKPOINT_VERSION: u8 = 1;
/// Pause before retrying a chunk the spool refused or failed to store.
const SPOOL_RETRY: Duration = Duration::from_millis(500);
/// Malformed lines are logged at most this often (with the count since).
const MALFORMED_LOG_EVERY: Duration = Duration::from_secs(60);

/// Where a source stands in its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Inode of the file.
    pub inode: u64,
    /// Next unread line starts here.
    pub offset: u64,
    /// Bytes fingerprinted from the start of the file.
    pub fingerprint_len: u16,
    /// FNV-1a 64 of those bytes.
    pub fingerprint: u64,
}

impl Checkpoint {
    /// The 27-byte encoding stored in the spool.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(27);
        out.push(CHECKPOINT_VERSION);
        out.extend_from_slice(&self.inode.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.fingerprint_len.to_le_bytes());
        out.extend_from_slice(&self.fingerprint.to_le_bytes());
        out
    }

    /// Decodes [`encode`](Self::encode)'s output; `None` for anything else.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != 27 || bytes[0] != CHECKPOINT_VERSION {
            return None;
        }
        let u64_at = |i: usize| bytes.get(i..i + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
        Some(Self {
            inode: u64_at(1)?,
            offset: u64_at(9)?,
            fingerprint_len: u16::from_le_bytes([bytes[17], bytes[18]]),
            fingerprint: u64_at(19)?,
        })
    }
}

/// The spool key of a source's checkpoint.
pub fn checkpoint_key(source_name: &str) -> String {
    format!("queue_log:{source_name}")
}

/// FNV-1a 64: tiny, stable across Rust releases (unlike `DefaultHasher`).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Fingerprint of the first `len` bytes of `file`, `None` when it is shorter.
fn fingerprint(file: &File, len: u64) -> io::Result<Option<u64>> {
    let mut buf = vec![0; usize::try_from(len).unwrap_or(0)];
    let mut read = 0;
    while read < buf.len() {
        match file.read_at(&mut buf[read..], read as u64)? {
            0 => return Ok(None),
            n => read += n,
        }
    }
    Ok(Some(fnv1a(&buf)))
}

/// The open file being tailed.
#[derive(Debug, Clone)]
struct OpenFile {
    file: Arc<File>,
    inode: u64,
}

impl OpenFile {
    fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let inode = file.metadata()?.ino();
        Ok(Self { file: Arc::new(file), inode })
    }
}

/// The CSV header line (with its line end) at the start of `head`, when the
/// input is CSV: the mapper needs it to know the columns when resuming
/// mid-file. Detected exactly as the mapper detects it.
fn csv_header_line(head: &[u8], form: Option<InputForm>) -> Option<&[u8]> {
    callkpi_feeds::queue_log::csv_header_line(head, form)
}

/// Runs blocking file I/O off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| Err(io::Error::other(e)))
}

/// Everything a queue_log source needs.
#[derive(Debug)]
pub struct QueueLogSource<S> {
    name: String,
    path: PathBuf,
    poll: Duration,
    rotate_wait: Duration,
    chunk: usize,
    mapper_config: QueueLogConfig,
    sink: S,
    clock: Clock,
    metrics: SourceMetrics,
    key: String,
}

/// The reading state within one file.
struct Reader {
    open: OpenFile,
    mapper: QueueLogMapper,
    /// Bytes read and not yet consumed by the mapper (an incomplete line).
    pending: Vec<u8>,
    /// Fingerprint of the first `fp_len` bytes of the file.
    fp_len: u64,
    fp: u64,
    /// Counters already reported from the mapper.
    unparsed: UnparsedCounts,
    /// Set once `path` names another file: the file to read next, while
    /// this one is finished.
    rotated: Option<Rotated>,
}

/// A rotation seen, waiting for the old file to be quiet.
struct Rotated {
    /// The file now at `path`.
    next: OpenFile,
    /// When the old file last grew (or the rotation was seen).
    quiet_since: Instant,
}

impl Reader {
    /// File position of the next read.
    fn read_pos(&self) -> u64 {
        self.mapper.offset() + self.pending.len() as u64
    }

    fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            inode: self.open.inode,
            offset: self.mapper.offset(),
            fingerprint_len: u16::try_from(self.fp_len).unwrap_or(0),
            fingerprint: self.fp,
        }
    }
}

/// What a poll at EOF found.
enum AtEof {
    /// Nothing new: wait.
    Idle,
    /// The handle has grown (bytes appended since the last read).
    Grown,
    /// `path` is another file now.
    Rotated(OpenFile),
    /// The file is shorter than the read position, or its start changed.
    Truncated,
}

/// Wakes the source when something happens to the file or its rotated
/// copies: an inotify watch on the file's directory, filtered by name. The
/// watch is dropped with it.
struct FsWake {
    wake: Arc<Notify>,
    watcher: Option<notify::RecommendedWatcher>,
}

impl FsWake {
    fn new() -> Self {
        Self { wake: Arc::new(Notify::new()), watcher: None }
    }

    /// Sets up the watch of `path`'s directory unless it is already there;
    /// on failure the source polls (logged once, by the caller's retries
    /// being silent).
    fn watch(&mut self, path: &Path, poll: Duration) {
        if self.watcher.is_some() {
            return;
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let Some(name) = path.file_name().map(std::ffi::OsStr::to_os_string) else { return };
        let wake = self.wake.clone();
        let relevant =
            move |p: &Path| p.file_name().is_some_and(|f| f.as_encoded_bytes().starts_with(name.as_encoded_bytes()));
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            // A rescan or an error (queue overflow): wake, the read finds out.
            Ok(ev) if ev.paths.is_empty() || ev.paths.iter().any(|p| relevant(p)) => wake.notify_one(),
            Ok(_) => {}
            Err(_) => wake.notify_one(),
        })
        .and_then(|mut w| w.watch(&dir, notify::RecursiveMode::NonRecursive).map(|()| w));
        match watcher {
            Ok(w) => {
                debug!(dir = %dir.display(), "Queue_log directory watched (inotify).");
                self.watcher = Some(w);
            }
            Err(e) => warn!(
                error = %e,
                dir = %dir.display(),
                poll_ms = poll.as_millis() as u64,
                "No file-system notifications for the queue_log directory; polling only."
            ),
        }
    }

    /// Until the file system reports a change, `poll` passes, or shutdown.
    async fn wait(&self, poll: Duration, shutdown: &CancellationToken) {
        tokio::select! {
            () = self.wake.notified() => {}
            () = tokio::time::sleep(poll) => {}
            () = shutdown.cancelled() => {}
        }
    }
}

impl<S: EventSink> QueueLogSource<S> {
    /// A source reading `config.path` into `sink`, its agent names passed
    /// through `config.agent_aliases`.
    ///
    /// # Errors
    /// When `config.time_zone` is unknown or `config.agent_aliases` invalid
    /// (both rejected by config validation first).
    pub fn new(
        config: &QueueLogSourceConfig,
        sink: S,
        clock: Clock,
        metrics: SourceMetrics,
    ) -> Result<Self, crate::config::ConfigError> {
        Ok(Self {
            mapper_config: config.mapper_config(&format!("sources.queue_log.{}", config.name))?,
            name: config.name.clone(),
            path: config.path.clone(),
            poll: Duration::from_millis(config.poll_interval_ms),
            rotate_wait: Duration::from_millis(config.rotate_wait_ms),
            chunk: config.read_chunk_bytes,
            sink,
            clock,
            metrics,
            key: checkpoint_key(&config.name),
        })
    }

    /// Tails the file until `shutdown` is cancelled. The last chunk read is
    /// stored before returning.
    pub async fn run(self, shutdown: CancellationToken) {
        let span = info_span!("source", kind = "queue_log", name = %self.name);
        self.run_inner(shutdown).instrument(span).await;
    }

    async fn run_inner(self, shutdown: CancellationToken) {
        info!(path = %self.path.display(), "Queue_log source started.");
        let mut fs = FsWake::new();
        fs.watch(&self.path, self.poll);
        let Some(mut reader) = self.resume(&mut fs, &shutdown).await else {
            info!("Queue_log source stopped.");
            return;
        };
        let mut last_malformed_log: Option<Instant> = None;
        let mut buf = vec![0; self.chunk];
        while !shutdown.is_cancelled() {
            match self.step(&mut reader, &mut buf, &shutdown, &mut last_malformed_log).await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => warn!(error = %e, path = %self.path.display(), "Queue_log read failed; retrying."),
            }
            // A rotated file is finished when its quiet time is up, whatever
            // the poll interval: no notification marks that moment.
            let wait = reader.rotated.as_ref().map_or(self.poll, |r| {
                self.rotate_wait.saturating_sub(r.quiet_since.elapsed()).clamp(Duration::from_millis(1), self.poll)
            });
            fs.wait(wait, &shutdown).await;
        }
        info!(offset = reader.mapper.offset(), "Queue_log source stopped.");
    }

    /// Opens the file and positions the reader from the stored checkpoint.
    /// `None` when shut down before the file appeared.
    async fn resume(&self, fs: &mut FsWake, shutdown: &CancellationToken) -> Option<Reader> {
        let stored = match self.sink.checkpoint(&self.key) {
            Ok(bytes) => bytes.as_deref().and_then(|b| {
                let cp = Checkpoint::decode(b);
                if cp.is_none() {
                    warn!(key = %self.key, "Stored checkpoint is unreadable; reading the file from the start.");
                }
                cp
            }),
            Err(e) => {
                error!(error = %e, key = %self.key, "Cannot read the checkpoint; reading the file from the start.");
                None
            }
        };
        let mut waiting_logged = false;
        let open = loop {
            let path = self.path.clone();
            match blocking(move || OpenFile::open(&path)).await {
                Ok(open) => {
                    // The directory may not have existed when the source started.
                    fs.watch(&self.path, self.poll);
                    break open;
                }
                Err(e) => {
                    if !waiting_logged {
                        warn!(error = %e, path = %self.path.display(), "Queue_log file cannot be opened; waiting for it.");
                        waiting_logged = true;
                    }
                    fs.wait(self.poll, shutdown).await;
                    if shutdown.is_cancelled() {
                        return None;
                    }
                }
            }
        };
        let offset = match stored {
            None => 0,
            Some(cp) => {
                let file = open.file.clone();
                let check = blocking(move || {
                    let size = file.metadata()?.len();
                    let fp = fingerprint(&file, u64::from(cp.fingerprint_len))?;
                    Ok((size, fp))
                })
                .await;
                let trusted = matches!(check, Ok((size, Some(fp))) if size >= cp.offset && fp == cp.fingerprint);
                let rotated_away = !trusted && check.is_ok() && cp.inode != open.inode;
                if let Some((old, old_path)) = if rotated_away { self.find_rotated(cp).await } else { None } {
                    self.metrics.rotations.inc();
                    info!(
                        old_inode = cp.inode,
                        inode = open.inode,
                        rotated = %old_path.display(),
                        offset = cp.offset,
                        "Queue_log was rotated while stopped; finishing the rotated file first."
                    );
                    let mut reader = self.reader_at(old, cp.offset, None).await;
                    reader.rotated = Some(Rotated { next: open, quiet_since: Instant::now() });
                    return Some(reader);
                }
                match check {
                    Ok(_) if trusted => {
                        if cp.inode != open.inode {
                            info!(
                                old_inode = cp.inode,
                                inode = open.inode,
                                "Queue_log file has a new inode but the same content; resuming."
                            );
                        }
                        cp.offset
                    }
                    Ok((size, _)) => {
                        if cp.inode == open.inode && size < cp.offset {
                            self.metrics.truncations.inc();
                            warn!(
                                size,
                                checkpoint = cp.offset,
                                "Queue_log file was truncated while stopped; reading from the start."
                            );
                        } else {
                            self.metrics.rotations.inc();
                            warn!(
                                old_inode = cp.inode,
                                inode = open.inode,
                                "Queue_log file was replaced while stopped and the old one is not in its directory; \
                                 reading the new file from the start (lines written to the old one after the \
                                 checkpoint were not read)."
                            );
                        }
                        0
                    }
                    Err(e) => {
                        warn!(error = %e, "Cannot check the queue_log checkpoint; reading from the start.");
                        0
                    }
                }
            }
        };
        info!(offset, inode = open.inode, "Queue_log reading from offset.");
        Some(self.reader_at(open, offset, None).await)
    }

    /// The file of `path`'s directory whose inode is the checkpoint's, when
    /// it still holds the checkpoint's offset and fingerprint: the rotated
    /// file the agent was reading when it stopped.
    async fn find_rotated(&self, cp: Checkpoint) -> Option<(OpenFile, PathBuf)> {
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let found = blocking(move || {
            for entry in std::fs::read_dir(&dir)?.flatten() {
                let Ok(meta) = entry.metadata() else { continue };
                if !meta.is_file() || meta.ino() != cp.inode || meta.len() < cp.offset {
                    continue;
                }
                let open = OpenFile::open(&entry.path())?;
                // The inode may have been reused by an unrelated file.
                if open.inode == cp.inode
                    && fingerprint(&open.file, u64::from(cp.fingerprint_len))? == Some(cp.fingerprint)
                {
                    return Ok(Some((open, entry.path())));
                }
            }
            Ok(None)
        })
        .await;
        found.unwrap_or_else(|e| {
            warn!(error = %e, "Cannot search the queue_log directory for the rotated file.");
            None
        })
    }

    /// A reader of `open` at `offset`, keeping the state of `previous`
    /// (calls open across a rotation) unless the input is CSV.
    /// The reader's mapper and its reported counts, to carry into the
    /// reader of the next file (or of the same file after a truncation).
    fn take_mapper(&self, reader: &mut Reader) -> (QueueLogMapper, UnparsedCounts) {
        let placeholder = QueueLogMapper::new(self.mapper_config.clone());
        (std::mem::replace(&mut reader.mapper, placeholder), reader.unparsed)
    }

    async fn reader_at(
        &self,
        open: OpenFile,
        offset: u64,
        previous: Option<(QueueLogMapper, UnparsedCounts)>,
    ) -> Reader {
        let fp_len = offset.min(FINGERPRINT_BYTES);
        let file = open.file.clone();
        let csv_header = self.mapper_config.form != Some(InputForm::File) && offset > 0;
        let probe = blocking(move || {
            let fp = fingerprint(&file, fp_len)?.unwrap_or(0);
            // The first line, to re-read a CSV header when resuming mid-file.
            let mut head = vec![0; 4096];
            let n = if csv_header { file.read_at(&mut head, 0)? } else { 0 };
            head.truncate(n);
            Ok((fp, head))
        })
        .await;
        let (fp, head) = probe.unwrap_or((0, Vec::new()));
        // A mapper carried over keeps its totals, and so the counts already
        // reported from them.
        let (mut mapper, mut unparsed) = match previous {
            Some((m, counts)) if m.form() != Some(InputForm::Csv) => (m.starting_at(offset), counts),
            _ => (QueueLogMapper::new(self.mapper_config.clone()).starting_at(offset), UnparsedCounts::default()),
        };
        if let Some(header) = csv_header_line(&head, self.mapper_config.form) {
            let header_len = header.len() as u64;
            if header_len <= offset {
                // Teach the mapper the column layout, then continue at `offset`.
                let mut fresh = QueueLogMapper::new(self.mapper_config.clone()).starting_at(offset - header_len);
                let mut none = Vec::new();
                fresh.push(header, &mut none);
                mapper = fresh;
                unparsed = UnparsedCounts::default();
            }
        }
        Reader { open, mapper, pending: Vec::new(), fp_len, fp, unparsed, rotated: None }
    }

    /// Reads and spools one chunk; at EOF, checks for rotation and
    /// truncation. `Ok(true)` when more may be readable at once.
    async fn step(
        &self,
        reader: &mut Reader,
        buf: &mut Vec<u8>,
        shutdown: &CancellationToken,
        last_log: &mut Option<Instant>,
    ) -> io::Result<bool> {
        let n = self.read_chunk(reader, buf).await?;
        if n > 0 {
            if let Some(r) = reader.rotated.as_mut() {
                r.quiet_since = Instant::now();
            }
            let mut events = Vec::new();
            let consumed = reader.mapper.push(&reader.pending, &mut events);
            reader.pending.drain(..consumed);
            self.update_fingerprint(reader).await;
            self.spool(reader, events, reader.checkpoint(), shutdown, last_log).await;
            return Ok(true);
        }
        match self.at_eof(reader).await? {
            AtEof::Idle => Ok(self.finish_rotated(reader, shutdown, last_log).await),
            AtEof::Grown => Ok(true),
            AtEof::Rotated(new) => {
                self.metrics.rotations.inc();
                info!(
                    old_inode = reader.open.inode,
                    inode = new.inode,
                    rotate_wait_ms = self.rotate_wait.as_millis() as u64,
                    "Queue_log rotated; finishing the old file until it is quiet."
                );
                reader.rotated = Some(Rotated { next: new, quiet_since: Instant::now() });
                Ok(self.rotate_wait.is_zero())
            }
            AtEof::Truncated => {
                self.metrics.truncations.inc();
                warn!(
                    offset = reader.read_pos(),
                    "Queue_log truncated; reading from the start (lines of the incomplete tail are dropped)."
                );
                let previous = self.take_mapper(reader);
                let open = reader.open.clone();
                let rotated = reader.rotated.take();
                *reader = self.reader_at(open, 0, Some(previous)).await;
                reader.rotated = rotated;
                self.spool(reader, Vec::new(), reader.checkpoint(), shutdown, last_log).await;
                Ok(true)
            }
        }
    }

    /// At EOF of a rotated file that has been quiet for `rotate_wait`: maps
    /// an unterminated last line as complete and moves to the new file.
    /// `false` while the old file may still be written.
    async fn finish_rotated(
        &self,
        reader: &mut Reader,
        shutdown: &CancellationToken,
        last_log: &mut Option<Instant>,
    ) -> bool {
        let Some(r) = reader.rotated.as_ref() else { return false };
        if r.quiet_since.elapsed() < self.rotate_wait {
            return false;
        }
        let Some(Rotated { next, .. }) = reader.rotated.take() else { return false };
        let mut events = Vec::new();
        reader.mapper.finish(&reader.pending, &mut events);
        reader.pending.clear();
        info!(
            old_inode = reader.open.inode,
            inode = next.inode,
            "Queue_log rotated file finished; following the new file."
        );
        let previous = self.take_mapper(reader);
        *reader = self.reader_at(next, 0, Some(previous)).await;
        self.spool(reader, events, reader.checkpoint(), shutdown, last_log).await;
        true
    }

    /// Reads up to one chunk at the read position into `reader.pending`.
    async fn read_chunk(&self, reader: &mut Reader, buf: &mut Vec<u8>) -> io::Result<usize> {
        let file = reader.open.file.clone();
        let pos = reader.read_pos();
        let mut chunk = std::mem::take(buf);
        let (chunk, n) = blocking(move || {
            let n = file.read_at(&mut chunk, pos)?;
            Ok((chunk, n))
        })
        .await?;
        reader.pending.extend_from_slice(&chunk[..n]);
        *buf = chunk;
        self.metrics.read_bytes.inc_by(n as u64);
        Ok(n)
    }

    /// Extends the fingerprint while the consumed prefix is still short.
    async fn update_fingerprint(&self, reader: &mut Reader) {
        let want = reader.mapper.offset().min(FINGERPRINT_BYTES);
        if want > reader.fp_len {
            let file = reader.open.file.clone();
            if let Ok(Some(fp)) = blocking(move || fingerprint(&file, want)).await {
                reader.fp_len = want;
                reader.fp = fp;
            }
        }
    }

    async fn at_eof(&self, reader: &Reader) -> io::Result<AtEof> {
        let file = reader.open.file.clone();
        let (fp_len, fp, pos, inode) = (reader.fp_len, reader.fp, reader.read_pos(), reader.open.inode);
        let rotated = reader.rotated.is_some();
        let path = self.path.clone();
        blocking(move || {
            let size = file.metadata()?.len();
            if size < pos || fingerprint(&file, fp_len)? != Some(fp) {
                return Ok(AtEof::Truncated);
            }
            if size > pos {
                return Ok(AtEof::Grown);
            }
            if rotated {
                return Ok(AtEof::Idle);
            }
            match std::fs::metadata(&path) {
                Ok(meta) if meta.ino() != inode => match OpenFile::open(&path) {
                    Ok(new) => Ok(AtEof::Rotated(new)),
                    // Renamed again between the stat and the open: next poll.
                    Err(_) => Ok(AtEof::Idle),
                },
                _ => Ok(AtEof::Idle),
            }
        })
        .await
    }

    /// Submits events with the checkpoint after them; retries until stored
    /// or shut down.
    async fn spool(
        &self,
        reader: &mut Reader,
        events: Vec<FeedEvent>,
        checkpoint: Checkpoint,
        shutdown: &CancellationToken,
        last_log: &mut Option<Instant>,
    ) {
        self.report_unparsed(reader, last_log);
        let count = events.len() as u64;
        EventsCaptured { count }.emit(&self.metrics);
        let captured = self.clock.capture();
        let inputs: Vec<SpoolInput> = events
            .into_iter()
            .map(|event| SpoolInput { source: SourceKind::AsteriskQueueLog, replayable: true, event, captured })
            .collect();
        let cp = (self.key.clone(), checkpoint.encode());
        let mut full_logged = false;
        loop {
            match self.sink.submit(inputs.clone(), Some(cp.clone())).await {
                Ok(AppendOutcome::Stored { .. }) => {
                    EventsSpooled { count }.emit(&self.metrics);
                    if full_logged {
                        info!("Spool has room again; queue_log reading resumed.");
                    }
                    debug!(events = count, offset = checkpoint.offset, "Queue_log chunk spooled.");
                    return;
                }
                Ok(AppendOutcome::Full) => {
                    self.metrics.full_waits.inc();
                    if !full_logged {
                        warn!(
                            offset = checkpoint.offset,
                            "Spool is full; queue_log reading paused until the aggregator acknowledges events."
                        );
                        full_logged = true;
                    }
                }
                Err(e) => error!(error = %e, "Cannot store queue_log events; retrying the same chunk."),
            }
            tokio::select! {
                () = tokio::time::sleep(SPOOL_RETRY) => {}
                () = shutdown.cancelled() => {
                    info!(offset = checkpoint.offset, "Shutdown while the spool refused a chunk; it will be read again at start.");
                    return;
                }
            }
        }
    }

    fn report_unparsed(&self, reader: &mut Reader, last_log: &mut Option<Instant>) {
        let unparsed = reader.mapper.unparsed();
        let unmapped: u64 = unparsed.by_name.values().sum();
        let new = reader.unparsed.report(SourceKind::AsteriskQueueLog, unparsed.malformed, unmapped, &self.metrics);
        if new > 0 && last_log.is_none_or(|t| t.elapsed() >= MALFORMED_LOG_EVERY) {
            if let Some(m) = reader.mapper.last_malformed() {
                warn!(at = m.at, error = %m.error, new, "Malformed queue_log lines skipped.");
            }
            *last_log = Some(Instant::now());
        }
        // A CSV header of no known layout: nothing of the file is read.
        if let Some(e) = reader.mapper.csv_header_error()
            && last_log.is_none_or(|t| t.elapsed() >= MALFORMED_LOG_EVERY)
        {
            error!(path = %self.path.display(), error = %e, "Queue_log CSV not read: set csv_columns.");
            *last_log = Some(Instant::now());
        }
    }
}
