//! The partition log: one replica of one partition, stored in one directory.
//!
//! This room owns the bytes on disk and nothing above them — no high watermark, leader
//! epochs or producer state (those belong to the partition). The directory holds:
//!
//! - segments `<base offset, 20 digits>.log`: RecordBatch v2 bytes exactly as produced,
//!   compressed batches included, so fetch serves them without re-encoding;
//! - `<base>.index`: sparse offset index, entries (u32 relative offset, u32 position);
//! - `<base>.timeindex`: sparse time index, entries (i64 max timestamp so far, u32
//!   relative offset);
//! - `log-start-offset` and `recovery-point` checkpoints;
//! - `leader-epoch-checkpoint`, the first offset of every leader epoch in the log (see
//!   `epoch.rs`), which replicas compare to find where their logs diverge;
//! - `cleaner-offset-checkpoint` and `cleaner-tombstone-expiry`, the compaction state of
//!   [`Log::compact`], and while a compaction pass swaps segments, `.cleaned` and `.swap`
//!   files (see [`cleaner`] for how a crash between them is resolved);
//! - `.clean-shutdown`, written by [`Log::close`] and removed by [`Log::open`].
//!
//! # Durability
//! An append returns once its bytes are in the OS page cache, so killing the broker
//! process (even with SIGKILL) loses nothing that was appended. Power loss or a kernel
//! crash can lose what was not yet fsynced: at most `flush_interval_ms` worth (when the
//! owner calls [`Log::flush_if_due`] periodically) or `flush_interval_messages` records.
//! With `flush_interval_messages = 1` every append is fsynced before it returns.
//! Replication, not fsync, is what makes acknowledged data durable in a cluster.
//!
//! # Storage failures
//! A failed fsync leaves the files in an unknown state: the kernel may have dropped the
//! dirty pages it could not write and will report the next fsync as a success. So the
//! first failed fsync — or a failed write other than a full disk, or a failed cut-back
//! of a torn append — takes the log offline ([`LogError::takes_log_offline`]): the append
//! that hit it fails, and every later append, flush and read fails with
//! [`LogError::Offline`] until the broker restarts and recovery re-reads what is really
//! on disk. A full disk (ENOSPC, EDQUOT) on a write does not: the write is cut back or
//! the old file left in place, the operation fails, and the next one is tried afresh, so
//! the log goes on as soon as there is room. Index entries and the recovery point are
//! only shortcuts for the next recovery, so a full disk refusing them does not fail a
//! flush whose data fsync succeeded.
//!
//! # Recovery
//! Without the clean-shutdown marker, every segment that may hold data past the
//! `recovery-point` is walked batch by batch, CRC-32C checked past the recovery point
//! (every batch of the active segment), and truncated at the first torn or invalid
//! batch; later segments are then dropped.
//! After a clean shutdown the active segment is still walked (framing of every batch,
//! CRC-32C of the last one), because a tail cut or overwritten while the broker was down
//! must be truncated rather than served. Other segments wholly below the recovery point
//! (or all closed segments after a clean shutdown) are trusted, and only their indexes
//! are sanity-checked.
//!
//! # Concurrency
//! All state sits behind one mutex. Appends write under it (they must be serialised
//! anyway); reads only resolve a file handle and a byte range under it and do their I/O
//! after releasing it. Deleting a segment unlinks its files, which leaves descriptors held
//! by in-flight reads valid.

pub mod batch;
pub(crate) mod checkpoint;
pub mod cleaner;
mod epoch;
mod follower;
mod index;
mod segment;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;
use parking_lot::Mutex;

use batch::{BatchError, BatchHeader, Batches};
pub use cleaner::CleanStats;
use epoch::EpochCache;
pub use epoch::EpochEntry;
use segment::{HeaderScan, Segment, SegmentView, Verify};

const LOG_START_OFFSET_FILE: &str = "log-start-offset";
const RECOVERY_POINT_FILE: &str = "recovery-point";
const CLEAN_SHUTDOWN_FILE: &str = ".clean-shutdown";

/// Errors of the partition log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// `source` carries the failed operation in its message, e.g. "fsync segment: ...".
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "offset {offset} is out of range: the log holds [{log_start_offset}, {log_end_offset})"
    )]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error("{} is corrupt: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    /// A replicated append whose offsets do not follow the log: batches must start at or
    /// after the log end offset and ascend.
    #[error("replicated batch at offset {offset} does not follow offset {follows}")]
    NonMonotonic { offset: i64, follows: i64 },
    /// An fsync failed. What the file holds on disk is unknown from then on (the kernel
    /// may have dropped the dirty pages it could not write, and a second fsync would
    /// report success), so this always takes the log offline.
    #[error("fsync of {} failed: {source}", path.display())]
    Sync {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The log went offline after a storage failure and refuses every read and write
    /// until the broker restarts and recovery checks it again.
    #[error("log {} is offline after a storage failure ({reason}); restart the broker to recover it", dir.display())]
    Offline { dir: PathBuf, reason: Arc<str> },
}

impl LogError {
    /// Whether the operation that failed leaves the log's files in a state the log can
    /// no longer vouch for, so that it must go offline. A full disk or quota on a write
    /// does not: every write path cuts back or leaves the old file in place, so the
    /// log is as it was before the operation. Any other I/O error, and every failed
    /// fsync, does.
    pub fn takes_log_offline(&self) -> bool {
        match self {
            LogError::Sync { .. } => true,
            LogError::Io { source, .. } => !is_out_of_space(source),
            _ => false,
        }
    }

    /// Whether this is a write refused for lack of space (ENOSPC or EDQUOT).
    pub fn is_out_of_space(&self) -> bool {
        matches!(self, LogError::Io { source, .. } if is_out_of_space(source))
    }
}

fn is_out_of_space(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

/// Wraps an I/O error with the file it concerns and the operation that failed, keeping
/// the error kind so callers can still tell, say, a full disk apart.
pub(crate) fn io_error(path: &Path, operation: &str, source: std::io::Error) -> LogError {
    LogError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(source.kind(), format!("{operation}: {source}")),
    }
}

/// A failed fsync of `path`, see [`LogError::Sync`].
pub(crate) fn sync_error(path: &Path, source: std::io::Error) -> LogError {
    LogError::Sync {
        path: path.to_path_buf(),
        source,
    }
}

/// Per-log settings; all sizes in bytes and times in milliseconds.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Roll when the active segment would exceed this size.
    pub segment_bytes: u64,
    /// Roll when the active segment's first batch was appended longer ago than this.
    pub segment_ms: i64,
    /// -1 = unlimited; total size above which the oldest whole segments are deleted.
    pub retention_bytes: i64,
    /// -1 = unlimited; delete whole segments whose largest timestamp is older than
    /// now - retention_ms.
    pub retention_ms: i64,
    /// Bytes between sparse index entries.
    pub index_interval_bytes: u32,
    /// Fsync after this many appended records (`u64::MAX` = never by count).
    pub flush_interval_messages: u64,
    /// [`Log::flush_if_due`] fsyncs once this much time passed since the last flush
    /// (-1 = never).
    pub flush_interval_ms: i64,
    /// Compaction: how long a tombstone stays readable after the cleaner first keeps it.
    pub delete_retention_ms: i64,
    /// Compaction runs once dirty bytes are at least this share of the cleanable bytes.
    pub min_cleanable_dirty_ratio: f64,
    /// Compaction leaves dirty segments alone until their newest record is this old.
    pub min_compaction_lag_ms: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        const DAY_MS: i64 = 24 * 60 * 60 * 1000;
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * DAY_MS,
            retention_bytes: -1,
            retention_ms: 7 * DAY_MS,
            index_interval_bytes: 4096,
            flush_interval_messages: u64::MAX,
            flush_interval_ms: 1000,
            delete_retention_ms: DAY_MS,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
        }
    }
}

/// What an append assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    pub log_start_offset: i64,
    pub max_timestamp: i64,
}

/// Whole batches returned by [`Log::read`], with the log bounds at the time of the read.
#[derive(Debug, Clone)]
pub struct ReadResult {
    pub records: Bytes,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.dir)
            .field("log_start_offset", &self.log_start_offset())
            .field("log_end_offset", &self.log_end_offset())
            .finish()
    }
}

/// One partition replica's log. `Send + Sync`; every method takes `&self`.
pub struct Log {
    dir: PathBuf,
    state: Mutex<State>,
    /// Serialises flushes so recovery-point checkpoints are written in order, without
    /// holding the state lock across fsync.
    flush_lock: Mutex<()>,
    /// Serialises compaction passes, which do their I/O without the state lock.
    clean_lock: Mutex<()>,
    /// Set by the first storage failure that takes the log offline (see
    /// [`LogError::takes_log_offline`]), never cleared: only a restart, which recovers
    /// the log from what is really on disk, brings it back. Taken after `state` and
    /// `flush_lock` when both are needed, and never held while taking another lock.
    failure: std::sync::OnceLock<Arc<str>>,
    #[cfg(test)]
    crash_at: Mutex<Option<cleaner::CrashPoint>>,
}

struct State {
    config: LogConfig,
    /// Keyed by base offset; never empty, the last one is the active segment.
    segments: BTreeMap<i64, Segment>,
    log_start_offset: i64,
    log_end_offset: i64,
    /// Everything below this offset is fsynced.
    recovery_point: i64,
    unflushed_records: u64,
    last_flush_ms: i64,
    /// A segment file was created since the last flush, so the directory needs an fsync.
    dir_dirty: bool,
    /// The clean-shutdown marker is on disk and must go before the log changes again.
    marker_written: bool,
    /// Compaction checkpoint: offsets below it were compacted by the last pass.
    cleaned_up_to: i64,
    /// Earliest delete horizon of a tombstone the cleaner kept, if any.
    tombstone_expiry: Option<i64>,
    /// First offset of every leader epoch; written before the data it describes.
    epochs: EpochCache,
}

impl State {
    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment")
    }

    fn out_of_range(&self, offset: i64) -> LogError {
        LogError::OffsetOutOfRange {
            offset,
            log_start_offset: self.log_start_offset,
            log_end_offset: self.log_end_offset,
        }
    }

    /// Seals the active segment and starts a new one at the log end offset. A no-op
    /// while the active segment is empty.
    fn roll(&mut self, dir: &Path, now_ms: i64) -> Result<(), LogError> {
        if self.active().is_empty() {
            return Ok(());
        }
        self.active_mut().write_indexes()?;
        let segment = Segment::create(dir, self.log_end_offset, now_ms)?;
        tracing::debug!(file = %segment.log_path().display(), "rolled to a new segment");
        self.segments.insert(self.log_end_offset, segment);
        self.dir_dirty = true;
        Ok(())
    }

    /// Deletes the oldest segment, which must not be the active one.
    fn delete_oldest(&mut self) -> Result<(), LogError> {
        debug_assert!(self.segments.len() > 1);
        let (_, segment) = self
            .segments
            .pop_first()
            .expect("a log always has an active segment");
        tracing::info!(file = %segment.log_path().display(), "deleting segment");
        segment.delete()
    }

    fn is_oldest_closed(&self) -> bool {
        self.segments.len() > 1
    }

    fn oldest(&self) -> &Segment {
        self.segments
            .values()
            .next()
            .expect("a log always has an active segment")
    }

    /// Moves the log start offset up to the oldest remaining segment, persisting it.
    fn advance_log_start(&mut self, dir: &Path, to: i64) -> Result<(), LogError> {
        let to = to.max(self.oldest().base_offset());
        if to > self.log_start_offset {
            checkpoint::write(&dir.join(LOG_START_OFFSET_FILE), to)?;
            self.log_start_offset = to;
            self.trim_epochs()?;
        }
        Ok(())
    }

    /// Forgets epochs wholly below the log start offset.
    fn trim_epochs(&mut self) -> Result<(), LogError> {
        if self.epochs.truncate_from_start(self.log_start_offset) {
            self.epochs.persist()?;
        }
        Ok(())
    }

    /// Records the epoch of every batch about to be written (the headers carry their
    /// final base offsets) and persists the cache if that added an epoch, before the data
    /// goes out: a crash then leaves the cache ahead of the log, never behind it.
    fn note_epochs(&mut self, batches: &[(BatchHeader, Range<usize>)]) -> Result<(), LogError> {
        let mut changed = false;
        for (header, _) in batches {
            changed |= self
                .epochs
                .assign(header.partition_leader_epoch, header.base_offset);
        }
        if changed {
            self.epochs.persist()?;
        }
        Ok(())
    }
}

impl Log {
    /// Opens or creates the log in `dir`, recovering it (see the module docs). Stray
    /// `.tmp` and `.deleted` files are removed; a log with no segments gets an empty one
    /// at the log start offset.
    pub fn open(dir: &Path, config: LogConfig, now_ms: i64) -> Result<Log, LogError> {
        crate::durability::create_dir_all(dir)
            .map_err(|e| io_error(dir, "create log directory", e))?;
        let marker = dir.join(CLEAN_SHUTDOWN_FILE);
        let clean = marker.exists();
        if clean {
            std::fs::remove_file(&marker)
                .map_err(|e| io_error(&marker, "remove clean-shutdown marker", e))?;
        }
        cleaner::finish_interrupted_swaps(dir)?;
        let bases = Self::scan_dir(dir)?;

        let checkpointed_start = checkpoint::read(&dir.join(LOG_START_OFFSET_FILE))?;
        let recovery_point = if clean {
            i64::MAX
        } else {
            match checkpoint::read(&dir.join(RECOVERY_POINT_FILE)) {
                Ok(point) => point.unwrap_or(0),
                Err(LogError::Corrupt { path, reason }) => {
                    tracing::warn!(file = %path.display(), %reason, "ignoring recovery point, recovering every segment");
                    0
                }
                Err(e) => return Err(e),
            }
        };

        let interval = config.index_interval_bytes;
        let mut segments = BTreeMap::new();
        let mut truncated_at: Option<i64> = None;
        let mut recovered = Vec::new();
        for (i, &base) in bases.iter().enumerate() {
            if let Some(cut) = truncated_at {
                tracing::warn!(
                    file = %segment::segment_path(dir, base, segment::LOG_SUFFIX).display(),
                    "deleting segment that follows a truncation at offset {cut}"
                );
                Self::remove_segment_files(dir, base)?;
                continue;
            }
            // A segment can hold unsynced data only if data after it could: the next
            // segment's base bounds its last offset.
            let may_be_unsynced = bases.get(i + 1).is_none_or(|&next| next > recovery_point);
            let active = i + 1 == bases.len();
            // The active segment is walked even after a clean shutdown: a tail cut or
            // damaged while the broker was down must be truncated, not served. After a
            // crash every batch of it has its CRC checked, not only those past the
            // recovery point: the walk reads the whole file anyway, and a batch damaged
            // below the recovery point would otherwise be served with a bad CRC.
            let verify = if !clean && active {
                Some(Verify::From(base))
            } else if !clean && may_be_unsynced {
                Some(Verify::From(recovery_point))
            } else if active {
                Some(Verify::LastBatch)
            } else {
                None
            };
            let segment = if let Some(verify) = verify {
                recovered.push(base);
                // The next segment's base bounds this one's offsets.
                let end = bases.get(i + 1).copied().unwrap_or(i64::MAX);
                let (segment, truncation) =
                    Segment::recover(dir, base, verify, end, interval, now_ms)?;
                if truncation.is_some() && i + 1 < bases.len() {
                    truncated_at = Some(segment.next_offset());
                }
                segment
            } else {
                Segment::open_trusted(dir, base, interval, now_ms)?
            };
            segments.insert(base, segment);
        }

        let mut dir_dirty = false;
        if segments.is_empty() {
            let base = checkpointed_start.unwrap_or(0).max(0);
            segments.insert(base, Segment::create(dir, base, now_ms)?);
            dir_dirty = true;
        }
        let first_base = segments.values().next().map_or(0, Segment::base_offset);
        let mut log_end_offset = segments
            .values()
            .next_back()
            .map_or(0, Segment::next_offset);
        let log_start_offset = checkpointed_start.unwrap_or(first_base).max(first_base);
        if log_start_offset > log_end_offset {
            // The tail holding the log start offset was lost; keeping older segments would
            // hand out offsets below a start clients have already seen.
            tracing::warn!(
                dir = %dir.display(),
                log_start_offset,
                log_end_offset,
                "log start offset is past the recovered end, starting an empty segment there"
            );
            for segment in std::mem::take(&mut segments).into_values() {
                segment.delete()?;
            }
            segments.insert(
                log_start_offset,
                Segment::create(dir, log_start_offset, now_ms)?,
            );
            log_end_offset = log_start_offset;
            dir_dirty = true;
        }
        if checkpointed_start != Some(log_start_offset) {
            checkpoint::write(&dir.join(LOG_START_OFFSET_FILE), log_start_offset)?;
        }
        // Recovered segments may have been truncated and their indexes rewritten; make
        // that durable before the recovery point below vouches for it.
        for segment in segments.values_mut() {
            if recovered.contains(&segment.base_offset()) || dir_dirty {
                segment.write_indexes()?;
                for (file, path) in segment.sync_targets() {
                    crate::durability::sync_file_data(&file, &path)
                        .map_err(|e| sync_error(&path, e))?;
                }
            }
        }
        if !recovered.is_empty() || dir_dirty {
            checkpoint::sync_dir(dir)?;
        }
        checkpoint::write(&dir.join(RECOVERY_POINT_FILE), log_end_offset)?;
        let (cleaned_up_to, tombstone_expiry) = cleaner::read_state(dir, log_end_offset)?;
        let epochs = Self::load_epochs(dir, &segments, log_start_offset, log_end_offset)?;

        Ok(Log {
            dir: dir.to_path_buf(),
            state: Mutex::new(State {
                config,
                segments,
                log_start_offset,
                log_end_offset,
                recovery_point: log_end_offset,
                unflushed_records: 0,
                last_flush_ms: now_ms,
                dir_dirty: false,
                marker_written: false,
                cleaned_up_to,
                tombstone_expiry,
                epochs,
            }),
            flush_lock: Mutex::new(()),
            clean_lock: Mutex::new(()),
            failure: std::sync::OnceLock::new(),
            #[cfg(test)]
            crash_at: Mutex::new(None),
        })
    }

    /// Loads the leader-epoch cache, or rebuilds it from the batch headers when it is
    /// missing or unreadable, and drops entries the recovered log no longer backs.
    fn load_epochs(
        dir: &Path,
        segments: &BTreeMap<i64, Segment>,
        log_start_offset: i64,
        log_end_offset: i64,
    ) -> Result<EpochCache, LogError> {
        let (mut epochs, mut changed) = match EpochCache::load(dir)? {
            Some(epochs) => (epochs, false),
            None => {
                let mut epochs = EpochCache::empty(dir);
                for segment in segments.values() {
                    let view = segment.view();
                    let mut scan = HeaderScan::new(&view.file, &view.path, 0, view.size);
                    while let Some(item) = scan.next_header() {
                        let (header, _) = item?;
                        epochs.assign(header.partition_leader_epoch, header.base_offset);
                    }
                }
                tracing::info!(dir = %dir.display(), epochs = epochs.entries().len(), "rebuilt the leader-epoch cache from the log");
                (epochs, true)
            }
        };
        changed |= epochs.truncate_from_end(log_end_offset);
        changed |= epochs.truncate_from_start(log_start_offset);
        if changed {
            epochs.persist()?;
        }
        Ok(epochs)
    }

    /// Lists segment base offsets in `dir`, removing leftovers of interrupted writes and
    /// deletions and index files whose segment is gone.
    fn scan_dir(dir: &Path) -> Result<Vec<i64>, LogError> {
        let entries = std::fs::read_dir(dir).map_err(|e| io_error(dir, "list log directory", e))?;
        let mut bases = Vec::new();
        let mut index_files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error(dir, "list log directory", e))?;
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.ends_with(".tmp") || name.ends_with(&format!(".{}", segment::DELETED_SUFFIX)) {
                tracing::info!(file = %path.display(), "removing stray file");
                std::fs::remove_file(&path).map_err(|e| io_error(&path, "remove stray file", e))?;
                continue;
            }
            let Some((stem, suffix)) = name.split_once('.') else {
                continue;
            };
            let base = match stem.parse::<i64>() {
                Ok(base) if stem.len() == 20 && base >= 0 => base,
                _ => continue,
            };
            match suffix {
                segment::LOG_SUFFIX => bases.push(base),
                segment::INDEX_SUFFIX | segment::TIME_INDEX_SUFFIX => {
                    index_files.push((base, path))
                }
                _ => {}
            }
        }
        bases.sort_unstable();
        for (base, path) in index_files {
            if bases.binary_search(&base).is_err() {
                tracing::info!(file = %path.display(), "removing index without a segment");
                std::fs::remove_file(&path)
                    .map_err(|e| io_error(&path, "remove orphan index", e))?;
            }
        }
        Ok(bases)
    }

    fn remove_segment_files(dir: &Path, base: i64) -> Result<(), LogError> {
        for suffix in [
            segment::INDEX_SUFFIX,
            segment::TIME_INDEX_SUFFIX,
            segment::LOG_SUFFIX,
        ] {
            let path = segment::segment_path(dir, base, suffix);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(&path, "delete segment file", e)),
            }
        }
        Ok(())
    }

    /// Appends one or more already-validated batches (concatenated in `batches`), each
    /// written with a base offset that follows the log end offset and with the partition
    /// leader epoch it carries. Rolls the active segment first when it is too big or too
    /// old, writes everything with one write, and fsyncs when `flush_interval_messages`
    /// is reached. `batches` is not modified: the offsets are written to the file only.
    pub fn append(&self, batches: &[u8], now_ms: i64) -> Result<AppendInfo, LogError> {
        self.guarded(|| self.append_unguarded(batches, None, now_ms))
    }

    /// [`Log::append`] as the partition's leader at `epoch`: every batch is written
    /// with that partition leader epoch.
    pub fn append_as_leader(
        &self,
        batches: &[u8],
        epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        self.guarded(|| self.append_unguarded(batches, Some(epoch), now_ms))
    }

    fn append_unguarded(
        &self,
        batches: &[u8],
        epoch: Option<i32>,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        let mut parsed: Vec<(BatchHeader, Range<usize>)> =
            Batches::new(batches).collect::<Result<_, _>>()?;
        if parsed.is_empty() {
            return Err(BatchError::Truncated {
                needed: batch::HEADER_LEN,
                available: 0,
            }
            .into());
        }
        if let Some((header, _)) = parsed.iter().find(|(h, _)| h.last_offset_delta < 0) {
            return Err(BatchError::Corrupt(format!(
                "negative last offset delta {}",
                header.last_offset_delta
            ))
            .into());
        }
        let len = batches.len() as u64;
        if len > u64::from(u32::MAX) {
            return Err(BatchError::Corrupt(format!(
                "an append of {len} bytes does not fit in one segment"
            ))
            .into());
        }

        let (info, flush_now) = {
            let mut state = self.state.lock();
            if state.marker_written {
                self.remove_marker()?;
                state.marker_written = false;
            }
            let base_offset = state.log_end_offset;
            let mut next = base_offset;
            let mut records: u64 = 0;
            let mut max_timestamp = -1;
            let mut prefixes = Vec::with_capacity(parsed.len());
            for (header, range) in &mut parsed {
                prefixes.push(batch::leader_prefix(&batches[range.clone()], next, epoch));
                header.base_offset = next;
                if let Some(epoch) = epoch {
                    header.partition_leader_epoch = epoch;
                }
                next = header.last_offset() + 1;
                records += u64::from(header.last_offset_delta as u32) + 1;
                max_timestamp = max_timestamp.max(header.max_timestamp);
            }
            let last_offset = next - 1;
            state.note_epochs(&parsed)?;

            let config = &state.config;
            let active = state.active();
            let too_big = active.size() + len > config.segment_bytes;
            let too_old = active
                .first_append_ms()
                .is_some_and(|first| now_ms - first > config.segment_ms);
            let unrepresentable = !active.can_hold(len, last_offset);
            if !active.is_empty() && (too_big || too_old || unrepresentable) {
                state.roll(&self.dir, now_ms)?;
            }
            let interval = state.config.index_interval_bytes;
            // Noted before the state lock goes, so no append slips in behind a failed one.
            state
                .active_mut()
                .append(batches, &parsed, Some(&prefixes), interval, now_ms)
                .inspect_err(|e| self.note_failure(e))?;
            state.log_end_offset = next;
            state.unflushed_records = state.unflushed_records.saturating_add(records);
            let flush_now = state.unflushed_records >= state.config.flush_interval_messages;
            let info = AppendInfo {
                base_offset,
                last_offset,
                log_start_offset: state.log_start_offset,
                max_timestamp,
            };
            (info, flush_now)
        };
        if flush_now {
            self.flush()?;
        }
        Ok(info)
    }

    /// Returns whole batches starting with the one that contains `offset`, up to
    /// `max_bytes` in total, never including a batch whose base offset is >=
    /// `upper_bound`. With `min_one`, a first batch larger than `max_bytes` is returned
    /// whole (KIP-74). Batches come from one segment, as in Kafka; the next read continues
    /// in the next segment.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        upper_bound: i64,
        min_one: bool,
    ) -> Result<ReadResult, LogError> {
        self.check_online()?;
        let (mut view, mut position, log_start_offset, log_end_offset) = {
            let state = self.state.lock();
            if offset < state.log_start_offset || offset > state.log_end_offset {
                return Err(state.out_of_range(offset));
            }
            let (_, segment) = state
                .segments
                .range(..=offset)
                .next_back()
                .ok_or_else(|| state.out_of_range(offset))?;
            (
                segment.view(),
                segment.position_for(offset),
                state.log_start_offset,
                state.log_end_offset,
            )
        };
        let empty = ReadResult {
            records: Bytes::new(),
            log_start_offset,
            log_end_offset,
        };
        if offset >= log_end_offset {
            return Ok(empty);
        }
        loop {
            if let Some(range) =
                Self::select_batches(&view, position, offset, max_bytes, upper_bound, min_one)?
            {
                if range.is_empty() {
                    return Ok(empty);
                }
                let bytes = segment::read_range(&view, range)?;
                return Ok(ReadResult {
                    records: Bytes::from(bytes),
                    log_start_offset,
                    log_end_offset,
                });
            }
            // Nothing at or after `offset` in this segment: continue with the next one.
            let state = self.state.lock();
            match state.segments.range(view.base_offset + 1..).next() {
                Some((_, next)) => {
                    view = next.view();
                    position = 0;
                }
                None => return Ok(empty),
            }
        }
    }

    /// Picks the byte range to return from one segment. `None` if the segment holds no
    /// batch ending at or after `offset`; an empty range if limits exclude the first batch.
    fn select_batches(
        view: &SegmentView,
        position: u64,
        offset: i64,
        max_bytes: usize,
        upper_bound: i64,
        min_one: bool,
    ) -> Result<Option<Range<u64>>, LogError> {
        let mut scan = HeaderScan::new(&view.file, &view.path, position, view.size);
        let mut range: Option<Range<u64>> = None;
        while let Some(item) = scan.next_header() {
            let (header, at) = item?;
            let len = header.total_len() as u64;
            match &mut range {
                None => {
                    if header.last_offset() < offset {
                        continue;
                    }
                    if header.base_offset >= upper_bound || (len > max_bytes as u64 && !min_one) {
                        return Ok(Some(at..at));
                    }
                    range = Some(at..at + len);
                }
                Some(range) => {
                    let total = range.end - range.start + len;
                    if header.base_offset >= upper_bound || total > max_bytes as u64 {
                        break;
                    }
                    range.end = at + len;
                }
            }
        }
        Ok(range)
    }

    pub fn log_start_offset(&self) -> i64 {
        self.state.lock().log_start_offset
    }

    /// The offset the next appended record will get.
    pub fn log_end_offset(&self) -> i64 {
        self.state.lock().log_end_offset
    }

    /// OffsetsForLeaderEpoch: the largest epoch at most `epoch` this log holds and the
    /// offset where it ends (the next epoch's start, or the log end offset for the latest
    /// epoch); `None` if the epoch is newer than any here or the log has no epochs.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        let state = self.state.lock();
        state.epochs.end_offset_for(epoch, state.log_end_offset)
    }

    /// The leader epoch `offset` was written in (see [`EpochCache::epoch_at`]).
    pub fn epoch_at(&self, offset: i64) -> Option<i32> {
        self.state.lock().epochs.epoch_at(offset)
    }

    /// The epoch of the last batch written (or begun with [`Log::begin_epoch`]).
    pub fn latest_epoch(&self) -> Option<i32> {
        self.state.lock().epochs.latest().map(|e| e.epoch)
    }

    /// The leader-epoch cache's entries, oldest first.
    pub fn epoch_entries(&self) -> Vec<EpochEntry> {
        self.state.lock().epochs.entries().to_vec()
    }

    /// A new leader's epoch starts at the log end offset now, whether or not it ever
    /// writes (as Kafka assigns it on becoming leader): followers asking where an older
    /// epoch ended get this offset. Returns the epoch's start offset.
    pub fn begin_epoch(&self, epoch: i32) -> Result<i64, LogError> {
        self.guarded(|| self.begin_epoch_unguarded(epoch))
    }

    fn begin_epoch_unguarded(&self, epoch: i32) -> Result<i64, LogError> {
        let mut state = self.state.lock();
        let end = state.log_end_offset;
        if state.epochs.assign(epoch, end) {
            state.epochs.persist()?;
        }
        // Set up already (the same epoch again): it started where it was first begun.
        Ok(state
            .epochs
            .latest()
            .filter(|e| e.epoch == epoch)
            .map_or(end, |e| e.start_offset))
    }

    /// Bytes held by all segments.
    pub fn size_bytes(&self) -> u64 {
        self.state.lock().segments.values().map(Segment::size).sum()
    }

    /// Number of segments, the active one included.
    pub fn segment_count(&self) -> usize {
        self.state.lock().segments.len()
    }

    /// The directory this log lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// ListOffsets by timestamp: `(offset, timestamp)` of the first record at or above the
    /// log start offset whose timestamp is >= `ts`. None if there is no such record.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, LogError> {
        self.check_online()?;
        let (candidates, log_start_offset) = {
            let state = self.state.lock();
            let candidates: Vec<(SegmentView, u64)> = state
                .segments
                .values()
                .filter(|s| s.max_timestamp().is_some_and(|(max, _)| max >= ts))
                .map(|s| (s.view(), s.position_for_timestamp(ts)))
                .collect();
            (candidates, state.log_start_offset)
        };
        for (view, position) in candidates {
            let mut scan = HeaderScan::new(&view.file, &view.path, position, view.size);
            while let Some(item) = scan.next_header() {
                let (header, at) = item?;
                if header.max_timestamp < ts || header.last_offset() < log_start_offset {
                    continue;
                }
                let found = Self::find_record(&view, &header, at, |offset, timestamp| {
                    offset >= log_start_offset && timestamp >= ts
                })?;
                if found.is_some() {
                    return Ok(found);
                }
            }
        }
        Ok(None)
    }

    /// The largest timestamp in the log and the offset of the first record that has it,
    /// as `(timestamp, offset)` (ListOffsets MAX_TIMESTAMP). None for an empty log.
    pub fn max_timestamp(&self) -> Result<Option<(i64, i64)>, LogError> {
        self.check_online()?;
        let target = {
            let state = self.state.lock();
            let mut best: Option<(&Segment, i64, i64)> = None;
            for segment in state.segments.values() {
                if let Some((ts, batch_offset)) = segment.max_timestamp() {
                    if best.is_none_or(|(_, best_ts, _)| ts > best_ts) {
                        best = Some((segment, ts, batch_offset));
                    }
                }
            }
            best.map(|(segment, ts, batch_offset)| {
                (
                    segment.view(),
                    segment.position_for(batch_offset),
                    ts,
                    batch_offset,
                )
            })
        };
        let Some((view, position, max_ts, batch_offset)) = target else {
            return Ok(None);
        };
        let mut scan = HeaderScan::new(&view.file, &view.path, position, view.size);
        while let Some(item) = scan.next_header() {
            let (header, at) = item?;
            if header.base_offset != batch_offset {
                continue;
            }
            return match Self::find_record(&view, &header, at, |_, timestamp| timestamp == max_ts)? {
                Some((offset, timestamp)) => Ok(Some((timestamp, offset))),
                None => Err(LogError::Corrupt {
                    path: view.path.clone(),
                    reason: format!(
                        "batch at offset {batch_offset} claims max timestamp {max_ts} but no record has it"
                    ),
                }),
            };
        }
        Err(LogError::Corrupt {
            path: view.path.clone(),
            reason: format!("batch at offset {batch_offset} is missing"),
        })
    }

    /// Decodes the batch at `position` and returns the (offset, timestamp) of its first
    /// record accepted by `wanted`. LogAppendTime batches give every record the batch's
    /// max timestamp, as Kafka consumers see it.
    fn find_record(
        view: &SegmentView,
        header: &BatchHeader,
        position: u64,
        wanted: impl Fn(i64, i64) -> bool,
    ) -> Result<Option<(i64, i64)>, LogError> {
        let bytes = segment::read_range(view, position..position + header.total_len() as u64)?;
        let decoded =
            RecordBatchDecoder::decode(&mut Bytes::from(bytes)).map_err(|e| LogError::Corrupt {
                path: view.path.clone(),
                reason: format!(
                    "batch at position {position} (offset {}) does not decode: {e:#}",
                    header.base_offset
                ),
            })?;
        Ok(decoded.records.iter().find_map(|record| {
            let timestamp = if header.is_log_append_time() {
                header.max_timestamp
            } else {
                record.timestamp
            };
            wanted(record.offset, timestamp).then_some((record.offset, timestamp))
        }))
    }

    /// DeleteRecords: advances the log start offset to `offset` (at most the log end
    /// offset), persists it, and deletes the segments wholly below it. Returns the new
    /// log start offset.
    pub fn delete_records_before(&self, offset: i64) -> Result<i64, LogError> {
        self.guarded(|| self.delete_records_before_unguarded(offset))
    }

    fn delete_records_before_unguarded(&self, offset: i64) -> Result<i64, LogError> {
        let mut state = self.state.lock();
        if offset > state.log_end_offset || offset < 0 {
            return Err(state.out_of_range(offset));
        }
        if offset > state.log_start_offset {
            checkpoint::write(&self.dir.join(LOG_START_OFFSET_FILE), offset)?;
            state.log_start_offset = offset;
            state.trim_epochs()?;
        }
        Self::delete_below_start(&mut state)?;
        Ok(state.log_start_offset)
    }

    /// Deletes closed segments that hold nothing at or above the log start offset.
    fn delete_below_start(state: &mut State) -> Result<usize, LogError> {
        let mut deleted = 0;
        while state.is_oldest_closed() {
            let next_base = state
                .segments
                .keys()
                .nth(1)
                .copied()
                .expect("more than one segment");
            if next_base > state.log_start_offset {
                break;
            }
            state.delete_oldest()?;
            deleted += 1;
        }
        Ok(deleted)
    }

    /// Retention and time-based roll: rolls the active segment if it is older than
    /// `segment_ms` or itself expired, then deletes the oldest whole segments (never the
    /// active one) beyond `retention_ms` or `retention_bytes`, advancing and persisting
    /// the log start offset. Returns how many segments were deleted.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<usize, LogError> {
        self.guarded(|| self.enforce_retention_unguarded(now_ms))
    }

    fn enforce_retention_unguarded(&self, now_ms: i64) -> Result<usize, LogError> {
        let mut state = self.state.lock();
        let config = state.config.clone();
        let active = state.active();
        let roll_due = active
            .first_append_ms()
            .is_some_and(|first| now_ms - first > config.segment_ms);
        let expired =
            config.retention_ms >= 0 && now_ms - active.largest_time() > config.retention_ms;
        if !active.is_empty() && (roll_due || expired) {
            state.roll(&self.dir, now_ms)?;
        }

        let mut deleted = 0;
        if config.retention_ms >= 0 {
            while state.is_oldest_closed()
                && now_ms - state.oldest().largest_time() > config.retention_ms
            {
                state.delete_oldest()?;
                deleted += 1;
            }
        }
        if config.retention_bytes >= 0 {
            let total: u64 = state.segments.values().map(Segment::size).sum();
            let mut excess = total.saturating_sub(config.retention_bytes as u64);
            while state.is_oldest_closed() && excess >= state.oldest().size() && excess > 0 {
                excess -= state.oldest().size();
                state.delete_oldest()?;
                deleted += 1;
            }
        }
        deleted += Self::delete_below_start(&mut state)?;
        if deleted > 0 {
            let start = state.log_start_offset;
            state.advance_log_start(&self.dir, start)?;
        }
        Ok(deleted)
    }

    /// Fsyncs all data and indexes not yet synced and moves the recovery point to the log
    /// end offset as of the start of the flush.
    ///
    /// Once an fsync fails the log is offline (see [`LogError::Sync`]) and every later
    /// flush fails too, so nothing appended to it is ever reported durable again.
    pub fn flush(&self) -> Result<(), LogError> {
        let _flushing = self.flush_lock.lock();
        self.check_online()?;
        // The failure is recorded before the flush lock is released: a flush queued
        // behind this one must find the log offline rather than fsync again, which the
        // kernel reports as a success once it has dropped the pages it could not write.
        self.flush_locked().inspect_err(|e| self.note_failure(e))
    }

    fn flush_locked(&self) -> Result<(), LogError> {
        let (targets, flushed_to, dir_dirty) = {
            let mut state = self.state.lock();
            let recovery_point = state.recovery_point;
            let mut targets = Vec::new();
            for segment in state.segments.values_mut() {
                if segment.next_offset() > recovery_point || segment.base_offset() >= recovery_point
                {
                    // Index files only speed up a restart and may lag the data (recovery
                    // walks the batches after their last entry), so a full disk refusing
                    // them must not keep the data from being made durable.
                    match segment.write_indexes() {
                        Err(e) if e.is_out_of_space() => {
                            tracing::warn!(dir = %self.dir.display(), error = %e, "index entries not written, the disk is full; they are written at a later flush");
                        }
                        result => result?,
                    }
                    targets.extend(segment.sync_targets());
                }
            }
            state.unflushed_records = 0;
            let dir_dirty = std::mem::take(&mut state.dir_dirty);
            (targets, state.log_end_offset, dir_dirty)
        };
        let synced = (|| {
            for (file, path) in &targets {
                crate::durability::sync_file_data(file, path).map_err(|e| sync_error(path, e))?;
            }
            if dir_dirty {
                checkpoint::sync_dir(&self.dir)?;
            }
            Ok(())
        })();
        if let Err(e) = synced {
            if dir_dirty {
                self.state.lock().dir_dirty = true;
            }
            return Err(e);
        }
        let mut state = self.state.lock();
        if flushed_to > state.recovery_point {
            // The data is durable whether or not the checkpoint moves: an old recovery
            // point only makes the next recovery walk further.
            match checkpoint::write(&self.dir.join(RECOVERY_POINT_FILE), flushed_to) {
                Ok(()) => state.recovery_point = flushed_to,
                Err(e) if e.is_out_of_space() => {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "recovery point not moved, the disk is full");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Flushes if `flush_interval_ms` passed since the last time-based flush.
    pub fn flush_if_due(&self, now_ms: i64) -> Result<(), LogError> {
        {
            let mut state = self.state.lock();
            let interval = state.config.flush_interval_ms;
            if interval < 0 || now_ms - state.last_flush_ms < interval {
                return Ok(());
            }
            state.last_flush_ms = now_ms;
            if state.log_end_offset <= state.recovery_point && !state.dir_dirty {
                return Ok(());
            }
        }
        self.flush()
    }

    pub fn set_config(&self, config: LogConfig) {
        self.state.lock().config = config;
    }

    pub fn config(&self) -> LogConfig {
        self.state.lock().config.clone()
    }

    /// Flushes and writes the clean-shutdown marker so the next open skips recovery. The
    /// log should not be used afterwards; if it is appended to anyway, the marker is
    /// removed first so it never vouches for unsynced data.
    pub fn close(&self) -> Result<(), LogError> {
        self.guarded(|| self.close_unguarded())
    }

    fn close_unguarded(&self) -> Result<(), LogError> {
        self.flush()?;
        let mut state = self.state.lock();
        let marker = self.dir.join(CLEAN_SHUTDOWN_FILE);
        let file = std::fs::File::create(&marker)
            .map_err(|e| io_error(&marker, "write clean-shutdown marker", e))?;
        crate::durability::sync_file(&file, &marker).map_err(|e| sync_error(&marker, e))?;
        checkpoint::sync_dir(&self.dir)?;
        state.marker_written = true;
        Ok(())
    }

    fn remove_marker(&self) -> Result<(), LogError> {
        let marker = self.dir.join(CLEAN_SHUTDOWN_FILE);
        match std::fs::remove_file(&marker) {
            Ok(()) => checkpoint::sync_dir(&self.dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(&marker, "remove clean-shutdown marker", e)),
        }
    }

    /// Why the log is offline, if a storage failure took it offline (see
    /// [`LogError::Offline`]).
    pub fn storage_failure(&self) -> Option<Arc<str>> {
        self.failure.get().cloned()
    }

    /// `Err(Offline)` once a storage failure took the log offline.
    fn check_online(&self) -> Result<(), LogError> {
        // Read on every append and read: one atomic load while the log is healthy.
        match self.failure.get() {
            None => Ok(()),
            Some(reason) => Err(LogError::Offline {
                dir: self.dir.clone(),
                reason: Arc::clone(reason),
            }),
        }
    }

    /// Takes the log offline if `error` leaves its files in doubt. The first such
    /// failure is the one reported, once, at ERROR level.
    fn note_failure(&self, error: &LogError) {
        if !error.takes_log_offline() {
            return;
        }
        if self.failure.set(Arc::from(error.to_string())).is_ok() {
            tracing::error!(
                dir = %self.dir.display(),
                %error,
                "storage failure: the log is offline, refusing produce and fetch until the broker restarts"
            );
        }
    }

    /// Runs an operation that changes the log, unless the log is offline, and takes it
    /// offline if the operation fails in a way that leaves its files in doubt.
    pub(crate) fn guarded<T>(
        &self,
        operation: impl FnOnce() -> Result<T, LogError>,
    ) -> Result<T, LogError> {
        self.check_online()?;
        operation().inspect_err(|e| self.note_failure(e))
    }

    /// Deletes the directory and everything in it.
    pub fn delete(self) -> Result<(), LogError> {
        std::fs::remove_dir_all(&self.dir)
            .map_err(|e| io_error(&self.dir, "delete log directory", e))
    }
}

#[cfg(test)]
mod tests;
