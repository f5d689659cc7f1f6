//! One segment: a `.log` file of whole batches plus its offset and time indexes.
//!
//! A segment knows its own byte size, the offset after its last batch and its largest
//! timestamp; it appends, seals, locates batches by offset or timestamp, and rebuilds or
//! recovers itself from its batches when its indexes cannot be trusted. The log decides
//! when to roll, retain and flush.

use std::fs::{File, OpenOptions};
use std::io::IoSlice;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use super::batch::{self, BatchError, BatchHeader, HEADER_LEN};
use super::index::{offset_entries_valid, time_entries_valid, IndexFile, OffsetEntry, TimeEntry};
use super::{io_error, sync_error, LogError};

/// How much of a segment one read pulls in while walking batch headers.
const SCAN_CHUNK: usize = 64 * 1024;

pub(super) const LOG_SUFFIX: &str = "log";
pub(super) const INDEX_SUFFIX: &str = "index";
pub(super) const TIME_INDEX_SUFFIX: &str = "timeindex";
pub(super) const DELETED_SUFFIX: &str = "deleted";

/// The file name stem of a segment: its base offset as 20 zero-padded digits, so a
/// directory listing sorts segments by offset.
pub(super) fn file_stem(base_offset: i64) -> String {
    format!("{base_offset:020}")
}

pub(super) fn segment_path(dir: &Path, base_offset: i64, suffix: &str) -> PathBuf {
    dir.join(format!("{}.{suffix}", file_stem(base_offset)))
}

/// `path` with `.<extra>` appended to its file name.
pub(super) fn with_extension(path: &Path, extra: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(extra);
    PathBuf::from(name)
}

/// `path` without its last `.<extension>`.
pub(super) fn without_extension(path: &Path) -> PathBuf {
    path.with_extension("")
}

fn rename(from: &Path, to: &Path) -> Result<(), LogError> {
    std::fs::rename(from, to).map_err(|e| io_error(from, "rename segment file", e))
}

/// Where recovery stopped trusting a segment, and why.
#[derive(Debug)]
pub(super) struct Truncation {
    pub position: u64,
    pub reason: String,
}

/// Which batches' CRC-32C a recovery walk checks (every batch's framing is checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verify {
    /// None: the data is trusted.
    Nothing,
    /// Every batch whose last offset is at or after this offset.
    From(i64),
    /// Only the last batch: after a clean shutdown the tail is still the likeliest place
    /// for damage (a file cut or overwritten while the broker was down), and checking
    /// one batch keeps restarts fast.
    LastBatch,
}

pub(super) struct Segment {
    base_offset: i64,
    log_path: PathBuf,
    log: Arc<File>,
    size: u64,
    /// Offset after the last batch; the base offset while empty.
    next_offset: i64,
    /// Largest batch max timestamp and the base offset of the first batch that has it.
    max_timestamp: Option<(i64, i64)>,
    /// Wall clock of the first append, which drives `segment_ms` rolling.
    first_append_ms: Option<i64>,
    /// Wall clock of the last write, the retention clock for batches without timestamps.
    last_modified_ms: i64,
    offset_index: IndexFile<OffsetEntry>,
    time_index: IndexFile<TimeEntry>,
    bytes_since_index_entry: u64,
}

/// A reader's view of a segment, taken under the log lock and used without it.
#[derive(Clone)]
pub(super) struct SegmentView {
    pub base_offset: i64,
    pub path: PathBuf,
    pub file: Arc<File>,
    pub size: u64,
}

impl Segment {
    /// Creates an empty segment, replacing any files left at that base offset.
    pub fn create(dir: &Path, base_offset: i64, now_ms: i64) -> Result<Segment, LogError> {
        Self::create_with_paths(dir, base_offset, None, now_ms)
    }

    /// Creates an empty segment whose three files carry `extra` after their usual names
    /// (`<base>.log.<extra>` …), so the directory scan does not take it for a live
    /// segment until [`Segment::rename_files`] gives it its final names.
    pub fn create_staged(
        dir: &Path,
        base_offset: i64,
        extra: &str,
        now_ms: i64,
    ) -> Result<Segment, LogError> {
        Self::create_with_paths(dir, base_offset, Some(extra), now_ms)
    }

    fn create_with_paths(
        dir: &Path,
        base_offset: i64,
        extra: Option<&str>,
        now_ms: i64,
    ) -> Result<Segment, LogError> {
        let path = |suffix: &str| {
            let path = segment_path(dir, base_offset, suffix);
            extra.map_or(path.clone(), |extra| with_extension(&path, extra))
        };
        let log_path = path(LOG_SUFFIX);
        let log = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&log_path)
            .map_err(|e| io_error(&log_path, "create segment", e))?;
        Ok(Segment {
            base_offset,
            log_path,
            log: Arc::new(log),
            size: 0,
            next_offset: base_offset,
            max_timestamp: None,
            first_append_ms: None,
            last_modified_ms: now_ms,
            offset_index: IndexFile::create(path(INDEX_SUFFIX), Vec::new())?,
            time_index: IndexFile::create(path(TIME_INDEX_SUFFIX), Vec::new())?,
            bytes_since_index_entry: 0,
        })
    }

    /// Renames the segment's three files to `to(current path)`, index files first, so
    /// that the log file's rename is the step that completes the move. Open descriptors,
    /// including those held by readers, stay valid.
    pub fn rename_files(&mut self, to: impl Fn(&Path) -> PathBuf) -> Result<(), LogError> {
        let index_to = to(self.offset_index.path());
        rename(self.offset_index.path(), &index_to)?;
        self.offset_index.set_path(index_to);
        let time_to = to(self.time_index.path());
        rename(self.time_index.path(), &time_to)?;
        self.time_index.set_path(time_to);
        let log_to = to(&self.log_path);
        rename(&self.log_path, &log_to)?;
        self.log_path = log_to;
        Ok(())
    }

    /// Gives the log file the modification time of the data it was built from, so a
    /// rewritten segment without record timestamps is retained as long as the original.
    pub fn set_last_modified(&mut self, ms: i64) -> Result<(), LogError> {
        let time = UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
        self.log
            .set_modified(time)
            .map_err(|e| io_error(&self.log_path, "set segment modification time", e))?;
        self.last_modified_ms = ms;
        Ok(())
    }

    /// Wall clock of the last write (or the file's modification time after a restart).
    pub fn last_modified_ms(&self) -> i64 {
        self.last_modified_ms
    }

    /// Opens a segment whose data is trusted (fsynced, or written before a clean
    /// shutdown). Its indexes are used if well formed and rebuilt otherwise; data that
    /// does not parse is corruption the log refuses to hide.
    pub fn open_trusted(
        dir: &Path,
        base_offset: i64,
        index_interval: u32,
        now_ms: i64,
    ) -> Result<Segment, LogError> {
        let (mut segment, indexes_read) = Self::open_files(dir, base_offset, now_ms)?;
        if indexes_read && segment.load_indexes(index_interval)? {
            segment.note_first_batch(now_ms)?;
            return Ok(segment);
        }
        tracing::info!(
            file = %segment.log_path.display(),
            "index files missing or malformed, rebuilding them"
        );
        if let Some(stop) = segment.rebuild(index_interval, Verify::Nothing, i64::MAX)? {
            return Err(LogError::Corrupt {
                path: segment.log_path.clone(),
                reason: format!(
                    "invalid batch at position {}: {}",
                    stop.position, stop.reason
                ),
            });
        }
        segment.note_first_batch(now_ms)?;
        Ok(segment)
    }

    /// Opens a segment that may hold data never fsynced, or was damaged while the broker
    /// was down: walks every batch header, checks the CRC-32C of the batches `verify`
    /// selects, truncates the file at the first torn or invalid batch and rebuilds the
    /// indexes to match.
    pub fn recover(
        dir: &Path,
        base_offset: i64,
        verify: Verify,
        end: i64,
        index_interval: u32,
        now_ms: i64,
    ) -> Result<(Segment, Option<Truncation>), LogError> {
        let (mut segment, _) = Self::open_files(dir, base_offset, now_ms)?;
        let stop = segment.rebuild(index_interval, verify, end)?;
        if let Some(stop) = &stop {
            tracing::warn!(
                file = %segment.log_path.display(),
                position = stop.position,
                reason = %stop.reason,
                "truncating segment at the first invalid batch"
            );
            segment
                .log
                .set_len(stop.position)
                .map_err(|e| io_error(&segment.log_path, "truncate segment", e))?;
            crate::durability::sync_file(&segment.log, &segment.log_path)
                .map_err(|e| sync_error(&segment.log_path, e))?;
        }
        segment.note_first_batch(now_ms)?;
        Ok((segment, stop))
    }

    /// Opens the segment's files; the flag says whether both index files existed and held
    /// whole entries.
    fn open_files(dir: &Path, base_offset: i64, now_ms: i64) -> Result<(Segment, bool), LogError> {
        let log_path = segment_path(dir, base_offset, LOG_SUFFIX);
        let log = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&log_path)
            .map_err(|e| io_error(&log_path, "open segment", e))?;
        let meta = log
            .metadata()
            .map_err(|e| io_error(&log_path, "stat segment", e))?;
        let last_modified_ms = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(now_ms, |d| i64::try_from(d.as_millis()).unwrap_or(now_ms));
        let index_path = segment_path(dir, base_offset, INDEX_SUFFIX);
        let time_path = segment_path(dir, base_offset, TIME_INDEX_SUFFIX);
        let mut indexes_read = true;
        let offset_index = match IndexFile::read_entries(&index_path)? {
            Some(entries) => IndexFile::open_existing(index_path, entries)?,
            None => {
                indexes_read = false;
                IndexFile::create(index_path, Vec::new())?
            }
        };
        let time_index = match IndexFile::read_entries(&time_path)? {
            Some(entries) => IndexFile::open_existing(time_path, entries)?,
            None => {
                indexes_read = false;
                IndexFile::create(time_path, Vec::new())?
            }
        };
        let segment = Segment {
            base_offset,
            log_path,
            log: Arc::new(log),
            size: meta.len(),
            next_offset: base_offset,
            max_timestamp: None,
            first_append_ms: None,
            last_modified_ms,
            offset_index,
            time_index,
            bytes_since_index_entry: 0,
        };
        Ok((segment, indexes_read))
    }

    /// Validates the loaded indexes and completes the segment's metadata by walking only
    /// the batches after the last offset index entry. False if anything does not add up.
    fn load_indexes(&mut self, index_interval: u32) -> Result<bool, LogError> {
        let offsets = self.offset_index.entries();
        let times = self.time_index.entries();
        if !offset_entries_valid(offsets, self.size) || !time_entries_valid(times) {
            return Ok(false);
        }
        // An empty index is only plausible for a segment too small to need an entry.
        if self.size > 0 && offsets.is_empty() != times.is_empty() {
            return Ok(false);
        }
        let tail_start = offsets.last().map_or(0, |e| u64::from(e.position));
        let mut max_timestamp = times
            .last()
            .map(|e| (e.timestamp, self.base_offset + i64::from(e.relative_offset)));
        let mut next_offset = self.base_offset;
        let mut scan = HeaderScan::new(&self.log, &self.log_path, tail_start, self.size);
        while let Some(item) = scan.next_header() {
            let (header, position) = match item {
                Ok(found) => found,
                Err(LogError::Batch(_)) => return Ok(false),
                Err(e) => return Err(e),
            };
            // A batch this far in would have been indexed: the index lost entries.
            if offsets.is_empty() && position >= u64::from(index_interval) {
                return Ok(false);
            }
            if header.base_offset < next_offset || header.last_offset_delta < 0 {
                return Ok(false);
            }
            if header.records_count > 0
                && max_timestamp.is_none_or(|(ts, _)| header.max_timestamp > ts)
            {
                max_timestamp = Some((header.max_timestamp, header.base_offset));
            }
            next_offset = header.last_offset() + 1;
        }
        let last_relative = next_offset - 1 - self.base_offset;
        let offsets_in_range = offsets
            .last()
            .is_none_or(|e| i64::from(e.relative_offset) <= last_relative);
        let times_in_range = times
            .last()
            .is_none_or(|e| i64::from(e.relative_offset) <= last_relative);
        if !offsets_in_range || !times_in_range {
            return Ok(false);
        }
        self.next_offset = next_offset;
        self.max_timestamp = max_timestamp;
        self.bytes_since_index_entry = self.size - tail_start;
        Ok(true)
    }

    /// Rebuilds indexes and metadata by walking every batch. With `verify_from`, batches
    /// whose last offset is at or past it also have their CRC checked. Returns where the
    /// first invalid batch starts, if any; `size` then ends there.
    fn rebuild(
        &mut self,
        index_interval: u32,
        verify: Verify,
        end: i64,
    ) -> Result<Option<Truncation>, LogError> {
        let file_len = self.size;
        self.size = 0;
        self.next_offset = self.base_offset;
        self.max_timestamp = None;
        self.bytes_since_index_entry = 0;
        self.offset_index = IndexFile::create(self.offset_index.path().to_path_buf(), Vec::new())?;
        self.time_index = IndexFile::create(self.time_index.path().to_path_buf(), Vec::new())?;

        let log = Arc::clone(&self.log);
        let path = self.log_path.clone();
        let mut scan = HeaderScan::new(&log, &path, 0, file_len);
        let mut stop = None;
        let mut last_batch = None;
        while let Some(item) = scan.next_header() {
            let (header, position) = match item {
                Ok(found) => found,
                Err(LogError::Batch(e)) => {
                    stop = Some(Truncation {
                        position: scan.position(),
                        reason: e.to_string(),
                    });
                    break;
                }
                Err(e) => return Err(e),
            };
            if let Err(reason) = self.check_sequence(&header) {
                stop = Some(Truncation { position, reason });
                break;
            }
            // Offsets from `end` on belong to the next segment: serving them from this
            // one too would hand out offsets past the log end, or twice.
            if header.last_offset() >= end {
                stop = Some(Truncation {
                    position,
                    reason: format!(
                        "offset {} reaches into the next segment, based at {end}",
                        header.last_offset()
                    ),
                });
                break;
            }
            if matches!(verify, Verify::From(from) if header.last_offset() >= from) {
                let mut bytes = vec![0; header.total_len()];
                log.read_exact_at(&mut bytes, position)
                    .map_err(|e| io_error(&path, "read segment", e))?;
                if let Err(e) = batch::verify_crc(&bytes) {
                    stop = Some(Truncation {
                        position,
                        reason: e.to_string(),
                    });
                    break;
                }
            }
            self.track_batch(&header, position, index_interval);
            last_batch = Some((header, position));
        }
        self.offset_index.write_pending()?;
        self.time_index.write_pending()?;
        if let (Verify::LastBatch, Some((header, position))) = (verify, last_batch) {
            let mut bytes = vec![0; header.total_len()];
            log.read_exact_at(&mut bytes, position)
                .map_err(|e| io_error(&path, "read segment", e))?;
            if batch::verify_crc(&bytes).is_err() {
                // Walk again, this time checking from that batch on, so the state and the
                // indexes end before it (and a torn batch after it goes too).
                self.size = file_len;
                return self.rebuild(index_interval, Verify::From(header.base_offset), end);
            }
        }
        Ok(stop)
    }

    /// Whether a batch may follow what the segment already holds.
    fn check_sequence(&self, header: &BatchHeader) -> Result<(), String> {
        if header.last_offset_delta < 0 {
            return Err(format!(
                "negative last offset delta {}",
                header.last_offset_delta
            ));
        }
        if header.base_offset < self.next_offset {
            return Err(format!(
                "base offset {} does not follow offset {}",
                header.base_offset,
                self.next_offset - 1
            ));
        }
        if header.last_offset() - self.base_offset > i64::from(u32::MAX) {
            return Err(format!(
                "offset {} is out of range for a segment based at {}",
                header.last_offset(),
                self.base_offset
            ));
        }
        Ok(())
    }

    /// Infers when the first batch was appended after a restart lost the wall clock: its
    /// max timestamp if it has one, otherwise now, so an old segment still rolls.
    fn note_first_batch(&mut self, now_ms: i64) -> Result<(), LogError> {
        if self.size == 0 {
            self.first_append_ms = None;
            return Ok(());
        }
        let mut scan = HeaderScan::new(&self.log, &self.log_path, 0, self.size);
        let first_ts = match scan.next_header() {
            Some(Ok((header, _))) if header.max_timestamp >= 0 => header.max_timestamp,
            Some(Err(LogError::Io { path, source })) => return Err(LogError::Io { path, source }),
            _ => now_ms,
        };
        self.first_append_ms = Some(first_ts);
        Ok(())
    }

    /// Updates metadata and indexes for a batch just written at `position`. An index entry
    /// is added once at least `index_interval` bytes were written since the previous one.
    fn track_batch(&mut self, header: &BatchHeader, position: u64, index_interval: u32) {
        // An empty batch (kept by the cleaner for its producer metadata) carries its
        // original max timestamp but no record has it, so it must not be found by time.
        if header.records_count > 0
            && self
                .max_timestamp
                .is_none_or(|(ts, _)| header.max_timestamp > ts)
        {
            self.max_timestamp = Some((header.max_timestamp, header.base_offset));
        }
        if self.bytes_since_index_entry >= u64::from(index_interval) {
            let relative = (header.base_offset - self.base_offset) as u32;
            self.offset_index.push(OffsetEntry {
                relative_offset: relative,
                position: position as u32,
            });
            if let Some((ts, offset)) = self.max_timestamp {
                if self.time_index.last().is_none_or(|e| ts > e.timestamp) {
                    self.time_index.push(TimeEntry {
                        timestamp: ts,
                        relative_offset: (offset - self.base_offset) as u32,
                    });
                }
            }
            self.bytes_since_index_entry = 0;
        }
        let len = header.total_len() as u64;
        self.bytes_since_index_entry += len;
        self.next_offset = header.last_offset() + 1;
        self.size = position + len;
    }

    /// Removes every batch whose last offset is at or after `offset` (so a batch holding
    /// `offset` goes whole), with their index entries, and fsyncs the file. Returns how
    /// many bytes went.
    pub fn truncate_to(&mut self, offset: i64, index_interval: u32) -> Result<u64, LogError> {
        let mut scan = HeaderScan::new(
            &self.log,
            &self.log_path,
            self.position_for(offset),
            self.size,
        );
        let mut cut = None;
        while let Some(item) = scan.next_header() {
            let (header, position) = item?;
            if header.last_offset() >= offset {
                cut = Some((position, header.base_offset));
                break;
            }
        }
        let Some((position, first_removed)) = cut else {
            return Ok(0);
        };
        let removed = self.size - position;
        self.log
            .set_len(position)
            .map_err(|e| io_error(&self.log_path, "truncate segment", e))?;
        crate::durability::sync_file_data(&self.log, &self.log_path)
            .map_err(|e| sync_error(&self.log_path, e))?;
        let keep_offsets = self
            .offset_index
            .entries()
            .partition_point(|e| u64::from(e.position) < position);
        self.offset_index.truncate(keep_offsets)?;
        let removed_relative = first_removed - self.base_offset;
        let keep_times = self
            .time_index
            .entries()
            .partition_point(|e| i64::from(e.relative_offset) < removed_relative);
        self.time_index.truncate(keep_times)?;
        // What is left is trusted: re-derive the metadata from the kept index entries and
        // the batches after the last of them, as a restart would.
        self.size = position;
        if !self.load_indexes(index_interval)? {
            if let Some(stop) = self.rebuild(index_interval, Verify::Nothing, i64::MAX)? {
                return Err(LogError::Corrupt {
                    path: self.log_path.clone(),
                    reason: format!(
                        "invalid batch at position {}: {}",
                        stop.position, stop.reason
                    ),
                });
            }
        }
        if self.size == 0 {
            self.first_append_ms = None;
        }
        Ok(removed)
    }

    /// Whether appending `len` bytes ending at `last_offset` keeps every position and
    /// relative offset representable in the 32-bit index fields.
    pub fn can_hold(&self, len: u64, last_offset: i64) -> bool {
        self.size + len <= u64::from(u32::MAX)
            && last_offset - self.base_offset <= i64::from(i32::MAX)
    }

    /// Appends already-offset-assigned batches with one write. On a failed write the file
    /// is cut back so a later append does not leave a torn batch in the middle.
    ///
    /// With `prefixes` (one per batch, in order; `batches` then cover `bytes` end to
    /// end), each batch's first [`batch::LEADER_PREFIX_LEN`] bytes are written from its
    /// prefix instead: the leader assigns offsets and its epoch without copying what a
    /// producer sent (one vectored write).
    pub fn append(
        &mut self,
        bytes: &[u8],
        batches: &[(BatchHeader, Range<usize>)],
        prefixes: Option<&[[u8; batch::LEADER_PREFIX_LEN]]>,
        index_interval: u32,
        now_ms: i64,
    ) -> Result<(), LogError> {
        let start = self.size;
        let written = match prefixes {
            None => self.log.write_all_at(bytes, start),
            Some(prefixes) => {
                debug_assert_eq!(prefixes.len(), batches.len());
                let mut slices = Vec::with_capacity(batches.len() * 2);
                for ((_, range), prefix) in batches.iter().zip(prefixes) {
                    slices.push(IoSlice::new(prefix));
                    slices.push(IoSlice::new(
                        &bytes[range.start + batch::LEADER_PREFIX_LEN..range.end],
                    ));
                }
                write_all_vectored_at(&self.log, &mut slices, start)
            }
        };
        if let Err(e) = written {
            if let Err(cut) = self.log.set_len(start) {
                // A torn batch may now sit at the end of the file: whatever the write
                // failed with, the log can no longer vouch for it.
                let kind = match cut.kind() {
                    std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                        std::io::ErrorKind::Other
                    }
                    kind => kind,
                };
                return Err(io_error(
                    &self.log_path,
                    "cut back a failed append",
                    std::io::Error::new(kind, format!("{cut} (the append failed with: {e})")),
                ));
            }
            return Err(io_error(&self.log_path, "append to segment", e));
        }
        for (header, range) in batches {
            self.track_batch(header, start + range.start as u64, index_interval);
        }
        self.first_append_ms.get_or_insert(now_ms);
        self.last_modified_ms = now_ms;
        Ok(())
    }

    /// Writes buffered index entries out so the index files match the data.
    pub fn write_indexes(&mut self) -> Result<(), LogError> {
        self.offset_index.write_pending()?;
        self.time_index.write_pending()
    }

    /// Files to fsync for this segment (after `write_indexes`), with their paths.
    pub fn sync_targets(&self) -> [(Arc<File>, PathBuf); 3] {
        [
            (Arc::clone(&self.log), self.log_path.clone()),
            (
                Arc::clone(self.offset_index.file()),
                self.offset_index.path().to_path_buf(),
            ),
            (
                Arc::clone(self.time_index.file()),
                self.time_index.path().to_path_buf(),
            ),
        ]
    }

    /// Removes the segment's files: renamed to `.deleted` first so a crash mid-way leaves
    /// files that open() recognises as garbage, never a half-deleted live segment. Readers
    /// holding the file keep a valid descriptor.
    pub fn delete(&self) -> Result<(), LogError> {
        let paths = [
            self.offset_index.path(),
            self.time_index.path(),
            self.log_path.as_path(),
        ];
        let mut renamed = Vec::with_capacity(paths.len());
        for path in paths {
            let mut target = path.as_os_str().to_owned();
            target.push(".");
            target.push(DELETED_SUFFIX);
            let target = PathBuf::from(target);
            match std::fs::rename(path, &target) {
                Ok(()) => renamed.push(target),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(path, "rename segment file for deletion", e)),
            }
        }
        for path in renamed {
            std::fs::remove_file(&path).map_err(|e| io_error(&path, "delete segment file", e))?;
        }
        Ok(())
    }

    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }

    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        self.max_timestamp
    }

    pub fn first_append_ms(&self) -> Option<i64> {
        self.first_append_ms
    }

    /// The time retention compares against: the largest record timestamp, or the last
    /// write when no batch carries a timestamp.
    pub fn largest_time(&self) -> i64 {
        match self.max_timestamp {
            Some((ts, _)) if ts >= 0 => ts,
            _ => self.last_modified_ms,
        }
    }

    /// Position of the nearest indexed batch at or before `offset`.
    pub fn position_for(&self, offset: i64) -> u64 {
        let relative = (offset - self.base_offset).clamp(0, i64::from(u32::MAX)) as u32;
        u64::from(self.offset_index.position_for(relative))
    }

    /// Position from which to look for the first record with a timestamp >= `timestamp`.
    pub fn position_for_timestamp(&self, timestamp: i64) -> u64 {
        match self.time_index.entry_before(timestamp) {
            Some(entry) => u64::from(self.offset_index.position_for(entry.relative_offset)),
            None => 0,
        }
    }

    pub fn view(&self) -> SegmentView {
        SegmentView {
            base_offset: self.base_offset,
            path: self.log_path.clone(),
            file: Arc::clone(&self.log),
            size: self.size,
        }
    }
}

/// Walks batch headers in `[start, end)` of a segment file, reading in chunks so a scan
/// over many small batches costs few system calls. Every batch must fit before `end`.
pub(super) struct HeaderScan<'a> {
    file: &'a File,
    path: &'a Path,
    pos: u64,
    end: u64,
    buf: Vec<u8>,
    buf_start: u64,
    done: bool,
}

impl<'a> HeaderScan<'a> {
    pub fn new(file: &'a File, path: &'a Path, start: u64, end: u64) -> Self {
        HeaderScan {
            file,
            path,
            pos: start,
            end,
            buf: Vec::new(),
            buf_start: start,
            done: false,
        }
    }

    /// Position of the next header, or of the one that failed.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The next header and its position. Data errors come back as `LogError::Batch`, I/O
    /// errors as `LogError::Io`; either ends the scan.
    pub fn next_header(&mut self) -> Option<Result<(BatchHeader, u64), LogError>> {
        if self.done || self.pos >= self.end {
            return None;
        }
        let result = self.read_header();
        if result.is_err() {
            self.done = true;
        }
        Some(result)
    }

    fn read_header(&mut self) -> Result<(BatchHeader, u64), LogError> {
        let left = self.end - self.pos;
        if left < HEADER_LEN as u64 {
            return Err(BatchError::Truncated {
                needed: HEADER_LEN,
                available: left as usize,
            }
            .into());
        }
        let buffered_end = self.buf_start + self.buf.len() as u64;
        if self.pos < self.buf_start || self.pos + HEADER_LEN as u64 > buffered_end {
            let len = left.min(SCAN_CHUNK as u64) as usize;
            self.buf.resize(len, 0);
            self.file
                .read_exact_at(&mut self.buf, self.pos)
                .map_err(|e| io_error(self.path, "read segment", e))?;
            self.buf_start = self.pos;
        }
        let at = (self.pos - self.buf_start) as usize;
        let header = BatchHeader::parse(&self.buf[at..at + HEADER_LEN])?;
        let len = header.total_len() as u64;
        if len > left {
            return Err(BatchError::Truncated {
                needed: len as usize,
                available: left as usize,
            }
            .into());
        }
        let position = self.pos;
        self.pos += len;
        Ok((header, position))
    }
}

/// Reads `range` of a segment file into memory.
pub(super) fn read_range(view: &SegmentView, range: Range<u64>) -> Result<Vec<u8>, LogError> {
    let mut bytes = vec![0; (range.end - range.start) as usize];
    view.file
        .read_exact_at(&mut bytes, range.start)
        .map_err(|e| io_error(&view.path, "read segment", e))?;
    Ok(bytes)
}

/// `pwritev` until every slice is written (or an error): the positional, vectored
/// counterpart of `FileExt::write_all_at`, which std lacks.
fn write_all_vectored_at(
    file: &File,
    mut slices: &mut [IoSlice<'_>],
    mut offset: u64,
) -> std::io::Result<()> {
    // Linux refuses more than IOV_MAX (1024) slices in one call.
    const IOV_MAX: usize = 1024;
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        let count = slices.len().min(IOV_MAX);
        let offset_arg = libc::off_t::try_from(offset)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::FileTooLarge))?;
        // SAFETY: `IoSlice` is ABI-compatible with `iovec` on Unix (std guarantees it),
        // the slices borrow live buffers for the duration of the call, and `count` is
        // within `slices`.
        let n = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                slices.as_ptr().cast::<libc::iovec>(),
                count as libc::c_int,
                offset_arg,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        offset += n as u64;
        IoSlice::advance_slices(&mut slices, n as usize);
    }
    Ok(())
}
