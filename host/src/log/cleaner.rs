//! Log compaction (`cleanup.policy=compact`): keeps the latest record per key in the
//! closed segments of one log, so the log stays a complete, bounded snapshot of a keyed
//! table while the active segment keeps taking appends.
//!
//! # A pass
//! [`Log::compact`] plans, under the log lock, which closed segments to clean: everything
//! from the log start up to the *first uncleanable offset* — the active segment's base, or
//! earlier the base of the first dirty segment still younger than `min_compaction_lag_ms`.
//! The *dirty* part starts at the cleaner checkpoint (where the previous pass stopped); a
//! pass runs once dirty bytes make up `min_cleanable_dirty_ratio` of the cleanable bytes,
//! or when retained tombstones have become removable. Then, without the lock:
//!
//! 1. the dirty part is read once to build a key → latest offset map (bounded in memory:
//!    past [`MAX_MAP_BYTES`] the pass stops at a segment boundary and the rest waits);
//! 2. adjacent cleanable segments are grouped (while their combined size fits
//!    `segment_bytes`) and each group is rewritten into one new segment keeping only the
//!    records that are the latest for their key. Records keep their offsets, timestamps
//!    and headers, and batches keep their codec, base offset, last offset delta, producer
//!    id, epoch and base sequence; only the records inside them thin out;
//! 3. the new segment is swapped in for the group (see below), readers never notice.
//!
//! Records with a null key cannot be kept by key and are dropped, as Kafka's cleaner
//! does; the produce path refuses them for compacted topics
//! ([`super::batch::has_null_key`]). Control and transactional batches are copied as
//! they are.
//!
//! # Tombstones
//! A record with a null value deletes its key. It must outlive every older value of the
//! key (removed in the same pass) and stay readable long enough for consumers that are
//! behind to see it. Following Kafka (KIP-534), the first pass that keeps a tombstone
//! stamps its batch with a *delete horizon*, `now + delete_retention_ms`, stored in the
//! batch's base timestamp with the delete-horizon attribute bit (record timestamp deltas
//! are re-based so timestamps do not change). A later pass at or after the horizon drops
//! the tombstone. So a tombstone is removed no earlier than `delete_retention_ms` after it
//! was first cleaned, whatever the timestamps producers gave it. The earliest pending
//! horizon is persisted, so the pass that removes the tombstones runs even when nothing
//! new is written.
//!
//! # Empty batches and producer state
//! A batch left with no records is dropped, except (a) the last batch of each producer
//! id within the cleaned range and (b) the last batch of a group; those are kept as an
//! empty batch header (records count 0, same offsets and sequences). (a) is what Kafka
//! does: rebuilding idempotent producer state from the log must still find each
//! producer's last sequence and epoch. (b) makes every rewritten segment end at the same
//! offset as the group it replaces, which is what lets crash recovery tell which original
//! segments a swap file replaces.
//!
//! # Crash safety
//! A group's replacement is written as `<base>.log.cleaned` (and `.index.cleaned`,
//! `.timeindex.cleaned`) and fsynced. It is then renamed to `.swap` (indexes first, the
//! log last) and the directory fsynced: the rename of `<base>.log.swap` is the commit
//! point. Next the originals are deleted, the `.swap` files renamed to their final names
//! (log last) and the directory fsynced once more. [`finish_interrupted_swaps`], run by
//! `Log::open` before anything else, completes or discards what a crash interrupted:
//! `.cleaned` files are discarded (the originals are intact); a `<base>.log.swap` is
//! complete, so every original segment whose base lies in `[base, swap's next offset)`
//! is deleted and the swap renamed into place; index `.swap` files without their log are
//! discarded (indexes are rebuilt from data when missing). The cleaner checkpoint is
//! written after the swaps, so a crash before it only makes the next pass redo work.
//!
//! # Concurrency
//! Passes of one log are serialised. Reading and writing happen without the log lock;
//! only the swap itself holds it, so appends and reads wait for a few renames at most.
//! Readers holding a replaced segment's file keep reading the old, complete data.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

use super::batch::{self, BatchHeader, Records, HEADER_LEN};
use super::segment::{self, Segment, SegmentView};
use super::{checkpoint, io_error, Log, LogConfig, LogError, State};

/// Where the cleaner stopped: offsets below are clean.
pub(super) const CLEANER_CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";
/// The earliest delete horizon of a retained tombstone, or -1 for none.
pub(super) const TOMBSTONE_EXPIRY_FILE: &str = "cleaner-tombstone-expiry";
const CLEANED: &str = "cleaned";
const SWAP: &str = "swap";

/// Memory the key → offset map may use before a pass stops at a segment boundary; the
/// rest of the dirty part is left for the next pass.
pub(super) const MAX_MAP_BYTES: usize = 128 << 20;
/// Estimated memory per map entry beyond the key itself (table slot, box, offset).
const MAP_ENTRY_OVERHEAD: usize = 48;
/// Segment data is read, and cleaned output written, in pieces of about this size.
const IO_CHUNK: usize = 1 << 20;

/// What one compaction pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanStats {
    /// Offsets below this are clean now (the new cleaner checkpoint).
    pub cleaned_up_to: i64,
    /// Segments in the log before and after the pass, the active one included.
    pub segments_before: usize,
    pub segments_after: usize,
    /// Bytes of the cleaned segments before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Records dropped because a later record has their key (or they had no key).
    pub records_removed: u64,
    /// Tombstones dropped because their delete horizon had passed.
    pub tombstones_removed: u64,
}

/// Where a test makes a pass stop as if the process had been killed there.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CrashPoint {
    /// The `.cleaned` files are complete and fsynced.
    CleanedWritten,
    /// They were renamed to `.swap`; no original is deleted yet.
    SwapRenamed,
    /// The first original segment of the group is deleted.
    OriginalDeleted,
    /// The swap is in place; the cleaner checkpoint is not yet written.
    Swapped,
}

/// A closed segment considered for cleaning.
struct Candidate {
    view: SegmentView,
    /// The next segment's base: every offset of this segment is below it.
    end: i64,
    size: u64,
    last_modified_ms: i64,
}

struct Plan {
    config: LogConfig,
    candidates: Vec<Candidate>,
    first_dirty: i64,
    uncleanable_end: i64,
    segments_before: usize,
}

/// What the read of the dirty part found.
struct Scan {
    /// Key → offset of its latest record in the dirty part.
    latest: HashMap<Box<[u8]>, i64>,
    /// Producer id → last offset of its last batch among the candidates.
    producer_last: HashMap<i64, i64>,
}

/// What to write for one input batch.
enum Outcome {
    Verbatim,
    Rewritten(Vec<u8>),
    Dropped,
}

impl Log {
    /// Runs one compaction pass if one is due (see the module docs) and returns what it
    /// did, or `None` when nothing was due. `now_ms` drives `min_compaction_lag_ms` and
    /// tombstone delete horizons.
    pub fn compact(&self, now_ms: i64) -> Result<Option<CleanStats>, LogError> {
        self.guarded(|| self.compact_unguarded(now_ms))
    }

    fn compact_unguarded(&self, now_ms: i64) -> Result<Option<CleanStats>, LogError> {
        let _cleaning = self.clean_lock.lock();
        let plan = {
            let state = self.state.lock();
            plan(&state, now_ms)
        };
        let Some(mut plan) = plan else {
            return Ok(None);
        };
        let scan = scan_dirty(&mut plan)?;
        let mut stats = CleanStats {
            cleaned_up_to: plan.uncleanable_end,
            segments_before: plan.segments_before,
            bytes_before: plan.candidates.iter().map(|c| c.size).sum(),
            ..CleanStats::default()
        };
        let mut expiry: Option<i64> = None;
        for group in groups(&plan) {
            let group = &plan.candidates[group];
            match self.clean_group(&plan, group, &scan, now_ms, &mut stats, &mut expiry)? {
                Some(out) => {
                    let bases: Vec<i64> = group.iter().map(|c| c.view.base_offset).collect();
                    let size = out.size();
                    if self.swap_in(out, &bases)? {
                        stats.bytes_after += size;
                    }
                }
                None => stats.bytes_after += group[0].size,
            }
        }
        #[cfg(test)]
        self.crash_if(CrashPoint::Swapped)?;
        checkpoint::write(
            &self.dir.join(CLEANER_CHECKPOINT_FILE),
            plan.uncleanable_end,
        )?;
        checkpoint::write(&self.dir.join(TOMBSTONE_EXPIRY_FILE), expiry.unwrap_or(-1))?;
        let mut state = self.state.lock();
        state.cleaned_up_to = plan.uncleanable_end;
        state.tombstone_expiry = expiry;
        stats.segments_after = state.segments.len();
        Ok(Some(stats))
    }

    /// Rewrites one group of segments into a staged segment. `None` when the group is a
    /// single segment that would come out unchanged.
    fn clean_group(
        &self,
        plan: &Plan,
        group: &[Candidate],
        scan: &Scan,
        now_ms: i64,
        stats: &mut CleanStats,
        expiry: &mut Option<i64>,
    ) -> Result<Option<Segment>, LogError> {
        let base = group[0].view.base_offset;
        let interval = plan.config.index_interval_bytes;
        let mut out = Segment::create_staged(&self.dir, base, CLEANED, now_ms)?;
        let written = (|| {
            let mut changed = group.len() > 1;
            let mut pending = Vec::with_capacity(IO_CHUNK);
            let mut parsed: Vec<(BatchHeader, Range<usize>)> = Vec::new();
            for (i, candidate) in group.iter().enumerate() {
                let mut reader = BatchReader::new(&candidate.view);
                let end = candidate.view.size;
                while let Some((header, at, bytes)) = reader.next_batch()? {
                    let last_of_group =
                        i + 1 == group.len() && at + header.total_len() as u64 == end;
                    let outcome = clean_batch(
                        &header,
                        bytes,
                        last_of_group,
                        scan,
                        &plan.config,
                        now_ms,
                        stats,
                        expiry,
                    )
                    .map_err(|e| corrupt(&candidate.view, at, e))?;
                    let start = pending.len();
                    match outcome {
                        Outcome::Verbatim => pending.extend_from_slice(bytes),
                        Outcome::Rewritten(bytes) => {
                            changed = true;
                            pending.extend_from_slice(&bytes);
                        }
                        Outcome::Dropped => {
                            changed = true;
                            continue;
                        }
                    }
                    let written = BatchHeader::parse(&pending[start..])?;
                    parsed.push((written, start..pending.len()));
                    if pending.len() >= IO_CHUNK {
                        out.append(&pending, &parsed, None, interval, now_ms)?;
                        pending.clear();
                        parsed.clear();
                    }
                }
            }
            if !pending.is_empty() {
                out.append(&pending, &parsed, None, interval, now_ms)?;
            }
            Ok::<bool, LogError>(changed)
        })();
        let changed = match written {
            Ok(changed) => changed,
            Err(e) => {
                discard(&out);
                return Err(e);
            }
        };
        if !changed {
            out.delete()?;
            return Ok(None);
        }
        let last_modified = group.iter().map(|c| c.last_modified_ms).max();
        let finished = (|| {
            out.write_indexes()?;
            if let Some(ms) = last_modified {
                out.set_last_modified(ms)?;
            }
            for (file, path) in out.sync_targets() {
                crate::durability::sync_file(&file, &path)
                    .map_err(|e| super::sync_error(&path, e))?;
            }
            Ok(())
        })();
        if let Err(e) = finished {
            discard(&out);
            return Err(e);
        }
        #[cfg(test)]
        self.crash_if(CrashPoint::CleanedWritten)?;
        Ok(Some(out))
    }

    /// Replaces the segments at `bases` with `out` on disk and in the segment map. False
    /// (and `out` discarded) if the group changed meanwhile, e.g. DeleteRecords removed
    /// some of it.
    fn swap_in(&self, mut out: Segment, bases: &[i64]) -> Result<bool, LogError> {
        let mut state = self.state.lock();
        let active_base = state.active().base_offset();
        let intact = bases
            .iter()
            .all(|b| *b < active_base && state.segments.contains_key(b));
        if !intact {
            drop(state);
            out.delete()?;
            return Ok(false);
        }
        out.rename_files(|p| segment::with_extension(&segment::without_extension(p), SWAP))?;
        checkpoint::sync_dir(&self.dir)?;
        #[cfg(test)]
        self.crash_if(CrashPoint::SwapRenamed)?;

        // Past the commit point the new segment holds the group's data whatever its files
        // are called, so it goes into the map even if a step below fails; open() finishes
        // the renames after a restart.
        let originals: Vec<Segment> = bases
            .iter()
            .filter_map(|b| state.segments.remove(b))
            .collect();
        let finished = (|| {
            for original in &originals {
                original.delete()?;
                #[cfg(test)]
                self.crash_if(CrashPoint::OriginalDeleted)?;
            }
            out.rename_files(segment::without_extension)?;
            checkpoint::sync_dir(&self.dir)
        })();
        tracing::info!(
            file = %out.log_path().display(),
            replaced = bases.len(),
            bytes = out.size(),
            "swapped in a cleaned segment"
        );
        state.segments.insert(bases[0], out);
        finished.map(|()| true)
    }

    #[cfg(test)]
    pub(super) fn crash_before(&self, point: CrashPoint) {
        *self.crash_at.lock() = Some(point);
    }

    #[cfg(test)]
    fn crash_if(&self, point: CrashPoint) -> Result<(), LogError> {
        if *self.crash_at.lock() == Some(point) {
            return Err(io_error(
                &self.dir,
                "simulated crash",
                std::io::Error::other(format!("{point:?}")),
            ));
        }
        Ok(())
    }
}

/// Decides, under the log lock, whether a pass is due and over which segments.
fn plan(state: &State, now_ms: i64) -> Option<Plan> {
    let config = state.config.clone();
    let bases: Vec<i64> = state.segments.keys().copied().collect();
    let active_base = *bases.last()?;
    let first_dirty = state.cleaned_up_to.max(state.log_start_offset);
    let mut uncleanable_end = active_base;
    let mut candidates = Vec::new();
    for (segment, &end) in state.segments.values().zip(&bases[1..]) {
        let dirty = end > first_dirty;
        // Kafka skips the lag check entirely at 0, so producer clocks running ahead
        // cannot hold compaction back.
        if dirty
            && config.min_compaction_lag_ms > 0
            && segment.largest_time() > now_ms.saturating_sub(config.min_compaction_lag_ms)
        {
            uncleanable_end = segment.base_offset();
            break;
        }
        candidates.push(Candidate {
            view: segment.view(),
            end,
            size: segment.size(),
            last_modified_ms: segment.last_modified_ms(),
        });
    }
    let dirty: u64 = candidates
        .iter()
        .filter(|c| c.end > first_dirty)
        .map(|c| c.size)
        .sum();
    let total: u64 = candidates.iter().map(|c| c.size).sum();
    let ratio_due = dirty > 0 && dirty as f64 >= config.min_cleanable_dirty_ratio * total as f64;
    let expiry_due = state.tombstone_expiry.is_some_and(|t| t <= now_ms);
    if candidates.is_empty() || !(ratio_due || expiry_due) {
        return None;
    }
    Some(Plan {
        config,
        candidates,
        first_dirty,
        uncleanable_end,
        segments_before: bases.len(),
    })
}

/// Reads the dirty part into the offset map and notes each producer's last batch. If the
/// map outgrows [`MAX_MAP_BYTES`], the plan is cut after the segment that did it.
fn scan_dirty(plan: &mut Plan) -> Result<Scan, LogError> {
    let mut scan = Scan {
        latest: HashMap::new(),
        producer_last: HashMap::new(),
    };
    let mut map_bytes = 0usize;
    let mut cut_at = None;
    for (i, candidate) in plan.candidates.iter().enumerate() {
        let dirty = candidate.end > plan.first_dirty;
        let mut reader = BatchReader::new(&candidate.view);
        while let Some((header, at, bytes)) = reader.next_batch()? {
            if header.producer_id >= 0 {
                scan.producer_last
                    .insert(header.producer_id, header.last_offset());
            }
            if !dirty
                || header.is_control()
                || header.is_transactional()
                || header.last_offset() < plan.first_dirty
            {
                continue;
            }
            let (_, plain) =
                batch::records_section(bytes).map_err(|e| corrupt(&candidate.view, at, e))?;
            for record in Records::new(&plain) {
                let record = record.map_err(|e| corrupt(&candidate.view, at, e))?;
                let Some(key) = record.key else { continue };
                let offset = header.base_offset + i64::from(record.offset_delta);
                match scan.latest.get_mut(key) {
                    Some(latest) => *latest = offset,
                    None => {
                        map_bytes += key.len() + MAP_ENTRY_OVERHEAD;
                        scan.latest.insert(key.into(), offset);
                    }
                }
            }
        }
        if dirty && map_bytes > MAX_MAP_BYTES && i + 1 < plan.candidates.len() {
            cut_at = Some(i + 1);
            break;
        }
    }
    if let Some(cut) = cut_at {
        plan.uncleanable_end = plan.candidates[cut].view.base_offset;
        plan.candidates.truncate(cut);
        tracing::info!(
            dir = %plan.candidates[0].view.path.parent().unwrap_or(Path::new("")).display(),
            up_to = plan.uncleanable_end,
            "offset map is full, cleaning part of the dirty log this pass"
        );
    }
    Ok(scan)
}

/// Splits the candidates into runs of adjacent segments to merge: each run fits in
/// `segment_bytes` (by the size before cleaning) and keeps relative offsets in range.
fn groups(plan: &Plan) -> Vec<Range<usize>> {
    let limit = plan.config.segment_bytes.min(u64::from(u32::MAX));
    let mut groups = Vec::new();
    let mut start = 0;
    while start < plan.candidates.len() {
        let base = plan.candidates[start].view.base_offset;
        let mut size = plan.candidates[start].size;
        let mut end = start + 1;
        while let Some(next) = plan.candidates.get(end) {
            if size + next.size > limit || next.end - 1 - base > i64::from(i32::MAX) {
                break;
            }
            size += next.size;
            end += 1;
        }
        groups.push(start..end);
        start = end;
    }
    groups
}

/// Decides what survives of one batch and builds its replacement if it changes.
#[allow(clippy::too_many_arguments)]
fn clean_batch(
    header: &BatchHeader,
    bytes: &[u8],
    last_of_group: bool,
    scan: &Scan,
    config: &LogConfig,
    now_ms: i64,
    stats: &mut CleanStats,
    expiry: &mut Option<i64>,
) -> Result<Outcome, batch::BatchError> {
    if header.is_control() || header.is_transactional() {
        return Ok(Outcome::Verbatim);
    }
    let (_, plain) = batch::records_section(bytes)?;
    let horizon = header.delete_horizon();
    let expired = horizon.is_some_and(|h| now_ms >= h);
    let mut kept = Vec::new();
    let mut total = 0usize;
    let mut tombstones = false;
    for record in Records::new(&plain) {
        let record = record?;
        total += 1;
        let offset = header.base_offset + i64::from(record.offset_delta);
        let latest = record
            .key
            .is_some_and(|key| scan.latest.get(key).is_none_or(|&l| l <= offset));
        if !latest {
            stats.records_removed += 1;
            continue;
        }
        if record.value.is_none() {
            if expired {
                stats.tombstones_removed += 1;
                continue;
            }
            tombstones = true;
        }
        kept.push(record);
    }

    // A batch keeping tombstones gets a horizon the first time it is cleaned.
    let new_horizon = (tombstones && horizon.is_none())
        .then(|| now_ms.saturating_add(config.delete_retention_ms.max(0)));
    if tombstones {
        let h = new_horizon.or(horizon).unwrap_or(now_ms);
        *expiry = Some(expiry.map_or(h, |e| e.min(h)));
    }
    if kept.len() == total && new_horizon.is_none() {
        return Ok(Outcome::Verbatim);
    }
    let keep_empty = last_of_group
        || (header.producer_id >= 0
            && scan.producer_last.get(&header.producer_id) == Some(&header.last_offset()));
    if kept.is_empty() && !keep_empty {
        return Ok(Outcome::Dropped);
    }

    let mut rebuilt = *header;
    let mut plain_out = Vec::with_capacity(plain.len());
    if kept.is_empty() {
        rebuilt.attributes = batch::with_codec(
            header.attributes,
            kafka_protocol::records::Compression::None,
        );
    } else {
        if let Some(h) = new_horizon {
            rebuilt.base_timestamp = h;
            rebuilt.attributes = batch::with_delete_horizon(header.attributes);
        }
        let shift = header.base_timestamp.wrapping_sub(rebuilt.base_timestamp);
        let mut max_timestamp = i64::MIN;
        for record in &kept {
            record.write(&mut plain_out, record.timestamp_delta.wrapping_add(shift));
            max_timestamp =
                max_timestamp.max(header.base_timestamp.wrapping_add(record.timestamp_delta));
        }
        // LogAppendTime batches report the broker's stamp for every record, and that is
        // the max timestamp they already carry.
        if !header.is_log_append_time() {
            rebuilt.max_timestamp = max_timestamp;
        }
    }
    let mut out = Vec::with_capacity(HEADER_LEN + plain_out.len());
    batch::build_batch(&rebuilt, &plain_out, kept.len() as i32, &mut out)?;
    Ok(Outcome::Rewritten(out))
}

fn corrupt(view: &SegmentView, position: u64, e: batch::BatchError) -> LogError {
    LogError::Corrupt {
        path: view.path.clone(),
        reason: format!("batch at position {position}: {e}"),
    }
}

/// Best-effort removal of a staged segment after a failure; the next open removes what
/// is left anyway.
fn discard(out: &Segment) {
    if let Err(e) = out.delete() {
        tracing::warn!(file = %out.log_path().display(), error = %e, "could not remove staged segment");
    }
}

/// A batch's header, its position in the segment and its bytes.
type FoundBatch<'b> = (BatchHeader, u64, &'b [u8]);

/// Reads whole batches of a closed segment sequentially, in large chunks.
struct BatchReader<'a> {
    view: &'a SegmentView,
    pos: u64,
    buf: Vec<u8>,
    buf_start: u64,
}

impl<'a> BatchReader<'a> {
    fn new(view: &'a SegmentView) -> Self {
        BatchReader {
            view,
            pos: 0,
            buf: Vec::new(),
            buf_start: 0,
        }
    }

    /// The next batch's header, position and bytes. Closed segments were validated when
    /// written or recovered, so a batch that does not parse is corruption.
    fn next_batch(&mut self) -> Result<Option<FoundBatch<'_>>, LogError> {
        let left = self.view.size.saturating_sub(self.pos);
        if left == 0 {
            return Ok(None);
        }
        let at = self.pos;
        self.fill(HEADER_LEN.min(left as usize))?;
        let header = BatchHeader::parse(self.buffered(HEADER_LEN.min(left as usize)))
            .map_err(|e| corrupt(self.view, at, e))?;
        let len = header.total_len();
        if len as u64 > left {
            return Err(corrupt(
                self.view,
                at,
                batch::BatchError::Truncated {
                    needed: len,
                    available: left as usize,
                },
            ));
        }
        self.fill(len)?;
        self.pos += len as u64;
        let start = (at - self.buf_start) as usize;
        Ok(Some((header, at, &self.buf[start..start + len])))
    }

    /// Makes sure `len` bytes from `pos` are buffered.
    fn fill(&mut self, len: usize) -> Result<(), LogError> {
        use std::os::unix::fs::FileExt;
        let buffered_end = self.buf_start + self.buf.len() as u64;
        if self.pos >= self.buf_start && self.pos + len as u64 <= buffered_end {
            return Ok(());
        }
        let want = (len.max(IO_CHUNK) as u64).min(self.view.size - self.pos) as usize;
        self.buf.resize(want, 0);
        self.view
            .file
            .read_exact_at(&mut self.buf, self.pos)
            .map_err(|e| io_error(&self.view.path, "read segment", e))?;
        self.buf_start = self.pos;
        Ok(())
    }

    fn buffered(&self, len: usize) -> &[u8] {
        let start = (self.pos - self.buf_start) as usize;
        &self.buf[start..start + len]
    }
}

/// Completes or discards a swap interrupted by a crash (see the module docs). Runs before
/// the directory is scanned for segments.
pub(super) fn finish_interrupted_swaps(dir: &Path) -> Result<(), LogError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io_error(dir, "list log directory", e))? {
        let entry = entry.map_err(|e| io_error(dir, "list log directory", e))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_string());
        }
    }
    let mut changed = false;
    let remove = |name: &str| -> Result<(), LogError> {
        let path = dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(&path, "remove interrupted cleaner file", e)),
        }
    };
    for name in names.iter().filter(|n| n.ends_with(&format!(".{CLEANED}"))) {
        tracing::info!(file = name, "discarding unfinished cleaner output");
        remove(name)?;
        changed = true;
    }
    let log_swap_suffix = format!(".{}.{SWAP}", segment::LOG_SUFFIX);
    let live_bases: Vec<i64> = names
        .iter()
        .filter_map(|n| n.strip_suffix(&format!(".{}", segment::LOG_SUFFIX)))
        .filter_map(parse_base)
        .collect();
    let mut completed = Vec::new();
    for name in &names {
        let Some(base) = name.strip_suffix(&log_swap_suffix).and_then(parse_base) else {
            continue;
        };
        let swap_path = dir.join(name);
        let next = next_offset(&swap_path, base)?;
        tracing::warn!(
            file = name,
            base,
            next,
            "completing an interrupted segment swap"
        );
        for &old in live_bases.iter().filter(|&&b| b >= base && b < next) {
            for suffix in [
                segment::INDEX_SUFFIX,
                segment::TIME_INDEX_SUFFIX,
                segment::LOG_SUFFIX,
            ] {
                remove(&format!("{}.{suffix}", segment::file_stem(old)))?;
            }
        }
        for suffix in [
            segment::INDEX_SUFFIX,
            segment::TIME_INDEX_SUFFIX,
            segment::LOG_SUFFIX,
        ] {
            let target = segment::segment_path(dir, base, suffix);
            let swap = segment::with_extension(&target, SWAP);
            match std::fs::rename(&swap, &target) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(&swap, "rename swap file into place", e)),
            }
        }
        completed.push(base);
        changed = true;
    }
    for name in names.iter().filter(|n| n.ends_with(&format!(".{SWAP}"))) {
        let base = name.split_once('.').and_then(|(stem, _)| parse_base(stem));
        if base.is_some_and(|b| completed.contains(&b)) {
            continue;
        }
        tracing::info!(
            file = name,
            "discarding index swap file without its segment"
        );
        remove(name)?;
        changed = true;
    }
    if changed {
        checkpoint::sync_dir(dir)?;
    }
    Ok(())
}

fn parse_base(stem: &str) -> Option<i64> {
    stem.parse::<i64>()
        .ok()
        .filter(|b| stem.len() == 20 && *b >= 0)
}

/// The offset after the last batch of a (complete) swap file.
fn next_offset(path: &Path, base: i64) -> Result<i64, LogError> {
    let file = std::fs::File::open(path).map_err(|e| io_error(path, "open swap file", e))?;
    let size = file
        .metadata()
        .map_err(|e| io_error(path, "stat swap file", e))?
        .len();
    let view = SegmentView {
        base_offset: base,
        path: path.to_path_buf(),
        file: std::sync::Arc::new(file),
        size,
    };
    let mut scan = segment::HeaderScan::new(&view.file, &view.path, 0, size);
    let mut next = base;
    while let Some(item) = scan.next_header() {
        let (header, _) = item.map_err(|e| LogError::Corrupt {
            path: path.to_path_buf(),
            reason: format!(
                "swap file does not parse at position {}: {e}",
                scan.position()
            ),
        })?;
        next = header.last_offset() + 1;
    }
    Ok(next)
}

/// Reads the cleaner checkpoint and pending tombstone expiry. A checkpoint beyond the
/// log end (the tail it covered was lost) or unreadable makes the whole log dirty again.
pub(super) fn read_state(dir: &Path, log_end_offset: i64) -> Result<(i64, Option<i64>), LogError> {
    let lenient = |file: &str| match checkpoint::read(&dir.join(file)) {
        Ok(value) => Ok(value),
        Err(LogError::Corrupt { path, reason }) => {
            tracing::warn!(file = %path.display(), %reason, "ignoring cleaner checkpoint");
            Ok(None)
        }
        Err(e) => Err(e),
    };
    let cleaned = lenient(CLEANER_CHECKPOINT_FILE)?
        .filter(|&c| c <= log_end_offset)
        .unwrap_or(0);
    let expiry = lenient(TOMBSTONE_EXPIRY_FILE)?.filter(|&e| e >= 0);
    Ok((cleaned, expiry))
}

#[cfg(test)]
mod tests;
