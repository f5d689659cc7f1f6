//! What a follower's log does beyond a leader's: append batches at the offsets the leader
//! gave them, cut its tail back to where it agrees with the leader, and start over at the
//! leader's log start when it has fallen behind it.
//!
//! Truncation and reset take the compaction and flush locks as well as the state lock:
//! a compaction pass swapping in segments it read before the cut, or a flush moving the
//! recovery point past the new end, would otherwise undo the cut.

use std::ops::Range;

use super::batch::{self, BatchError, BatchHeader, Batches};
use super::cleaner::{CLEANER_CHECKPOINT_FILE, TOMBSTONE_EXPIRY_FILE};
use super::segment::Segment;
use super::{
    checkpoint, AppendInfo, Log, LogError, State, LOG_START_OFFSET_FILE, RECOVERY_POINT_FILE,
};

impl Log {
    /// Appends batches a leader already assigned offsets to, exactly as they are. The
    /// first must start at or after the log end offset and each must start after the one
    /// before; gaps are allowed because a compacted leader log has them. Many batches in
    /// one buffer are written with one write per segment they land in (the segment rolls
    /// between batches as the leader's would), and the leader-epoch cache learns every
    /// new epoch from the batch headers. Framing is checked here; CRCs are the caller's.
    pub fn append_replicated(&self, batches: &[u8], now_ms: i64) -> Result<AppendInfo, LogError> {
        self.guarded(|| self.append_replicated_unguarded(batches, now_ms))
    }

    fn append_replicated_unguarded(
        &self,
        batches: &[u8],
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        let parsed: Vec<(BatchHeader, Range<usize>)> =
            Batches::new(batches).collect::<Result<_, _>>()?;
        let (Some((first, _)), Some((last, _))) = (parsed.first(), parsed.last()) else {
            return Err(BatchError::Truncated {
                needed: batch::HEADER_LEN,
                available: 0,
            }
            .into());
        };
        if let Some((header, _)) = parsed.iter().find(|(h, _)| h.last_offset_delta < 0) {
            return Err(BatchError::Corrupt(format!(
                "negative last offset delta {}",
                header.last_offset_delta
            ))
            .into());
        }
        let (base_offset, last_offset) = (first.base_offset, last.last_offset());

        let (info, flush_now) = {
            let mut state = self.state.lock();
            if state.marker_written {
                self.remove_marker()?;
                state.marker_written = false;
            }
            let mut follows = state.log_end_offset - 1;
            for (header, _) in &parsed {
                if header.base_offset <= follows {
                    return Err(LogError::NonMonotonic {
                        offset: header.base_offset,
                        follows,
                    });
                }
                follows = header.last_offset();
            }
            state.note_epochs(&parsed)?;
            let mut records: u64 = 0;
            let mut max_timestamp = -1;
            let mut i = 0;
            while i < parsed.len() {
                let end = self
                    .write_run(&mut state, batches, &parsed[i..], now_ms)
                    .inspect_err(|e| self.note_failure(e))?;
                for (header, _) in &parsed[i..i + end] {
                    records += u64::from(header.last_offset_delta as u32) + 1;
                    max_timestamp = max_timestamp.max(header.max_timestamp);
                }
                i += end;
            }
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

    /// Writes the longest prefix of `parsed` that fits the active segment (rolling first
    /// if not even the first batch fits) with one write; returns how many batches went.
    fn write_run(
        &self,
        state: &mut State,
        bytes: &[u8],
        parsed: &[(BatchHeader, Range<usize>)],
        now_ms: i64,
    ) -> Result<usize, LogError> {
        let (first, first_range) = &parsed[0];
        let config = &state.config;
        let active = state.active();
        let first_len = first_range.len() as u64;
        let too_big = active.size() + first_len > config.segment_bytes;
        let too_old = active
            .first_append_ms()
            .is_some_and(|first| now_ms - first > config.segment_ms);
        let unrepresentable = !active.can_hold(first_len, first.last_offset());
        if !active.is_empty() && (too_big || too_old || unrepresentable) {
            // Named after the batch it starts with, as Kafka's follower does, so a gap
            // left by compaction never has to fit the 32-bit relative offsets.
            self.roll_at(state, first.base_offset, now_ms)?;
        }
        let segment_bytes = state.config.segment_bytes;
        let active = state.active();
        let mut len = first_len;
        let mut count = 1;
        for (header, range) in &parsed[1..] {
            let next = len + range.len() as u64;
            if active.size() + next > segment_bytes || !active.can_hold(next, header.last_offset())
            {
                break;
            }
            len = next;
            count += 1;
        }
        let start = first_range.start;
        let end = parsed[count - 1].1.end;
        let run: Vec<(BatchHeader, Range<usize>)> = parsed[..count]
            .iter()
            .map(|(h, r)| (*h, r.start - start..r.end - start))
            .collect();
        let interval = state.config.index_interval_bytes;
        state
            .active_mut()
            .append(&bytes[start..end], &run, None, interval, now_ms)?;
        state.log_end_offset = run[count - 1].0.last_offset() + 1;
        Ok(count)
    }

    /// Seals the active segment and starts a new one at `base` (at or past the log end).
    fn roll_at(&self, state: &mut State, base: i64, now_ms: i64) -> Result<(), LogError> {
        state.active_mut().write_indexes()?;
        let segment = Segment::create(&self.dir, base, now_ms)?;
        tracing::debug!(file = %segment.log_path().display(), "rolled to a new segment");
        state.segments.insert(base, segment);
        state.dir_dirty = true;
        Ok(())
    }

    /// Removes everything at and above `offset`: later segments whole, the tail of the
    /// one holding it (a batch that straddles `offset` goes whole), their index entries
    /// and the epochs that started there. Durable before it returns. Truncating at or
    /// below the log start offset leaves nothing, so the log starts over empty at
    /// `offset` ([`Log::reset_to`]). Returns the new log end offset, which is at most
    /// `offset`.
    pub fn truncate_to(&self, offset: i64, now_ms: i64) -> Result<i64, LogError> {
        let _cleaning = self.clean_lock.lock();
        let _flushing = self.flush_lock.lock();
        self.check_online()?;
        let mut state = self.state.lock();
        // Noted under the flush lock, as a failed flush is (see `Log::flush`).
        self.truncate_locked(&mut state, offset, now_ms)
            .inspect_err(|e| self.note_failure(e))
    }

    fn truncate_locked(
        &self,
        state: &mut State,
        offset: i64,
        now_ms: i64,
    ) -> Result<i64, LogError> {
        if offset < 0 {
            return Err(state.out_of_range(offset));
        }
        if offset >= state.log_end_offset {
            // No data to cut, but an epoch begun at the end and never written to goes:
            // a follower must stop naming an epoch its leader says it diverged in.
            if state.epochs.truncate_from_end(offset) {
                state.epochs.persist()?;
            }
            return Ok(state.log_end_offset);
        }
        if offset <= state.log_start_offset {
            self.reset_locked(state, offset, now_ms)?;
            return Ok(offset);
        }
        if state.marker_written {
            self.remove_marker()?;
            state.marker_written = false;
        }
        tracing::info!(dir = %self.dir.display(), from = state.log_end_offset, to = offset, "truncating log");
        // Later segments first, then the tail: a crash in between leaves a log that is
        // merely longer than asked, which the follower truncates again.
        let mut removed_segments = false;
        while state.segments.len() > 1 && state.active().base_offset() >= offset {
            let (_, segment) = state.segments.pop_last().expect("more than one segment");
            segment.delete()?;
            removed_segments = true;
        }
        let interval = state.config.index_interval_bytes;
        state.active_mut().truncate_to(offset, interval)?;
        if removed_segments {
            checkpoint::sync_dir(&self.dir)?;
        }
        let end = state.active().next_offset();
        state.log_end_offset = end;
        if state.recovery_point > end {
            checkpoint::write(&self.dir.join(RECOVERY_POINT_FILE), end)?;
            state.recovery_point = end;
        }
        if state.epochs.truncate_from_end(end) {
            state.epochs.persist()?;
        }
        if state.cleaned_up_to > end {
            checkpoint::write(&self.dir.join(CLEANER_CHECKPOINT_FILE), end)?;
            state.cleaned_up_to = end;
        }
        Ok(end)
    }

    /// Deletes everything and starts the log over, empty, at `start` (a follower whose
    /// log ended before the leader's log start). Durable before it returns.
    pub fn reset_to(&self, start: i64, now_ms: i64) -> Result<(), LogError> {
        let _cleaning = self.clean_lock.lock();
        let _flushing = self.flush_lock.lock();
        self.check_online()?;
        let mut state = self.state.lock();
        if start < 0 {
            return Err(state.out_of_range(start));
        }
        self.reset_locked(&mut state, start, now_ms)
            .inspect_err(|e| self.note_failure(e))
    }

    fn reset_locked(&self, state: &mut State, start: i64, now_ms: i64) -> Result<(), LogError> {
        if state.marker_written {
            self.remove_marker()?;
            state.marker_written = false;
        }
        tracing::info!(dir = %self.dir.display(), log_end_offset = state.log_end_offset, start, "starting the log over");
        // The start checkpoint first: after a crash, open() either finds the old
        // segments (and a start it clamps to them) or none and starts empty there.
        checkpoint::write(&self.dir.join(LOG_START_OFFSET_FILE), start)?;
        let old = std::mem::take(&mut state.segments);
        let deleted = old.values().try_for_each(Segment::delete);
        // Whatever happened, the log keeps an active segment.
        let fresh = Segment::create(&self.dir, start, now_ms);
        let fresh = match fresh {
            Ok(segment) => segment,
            Err(e) => {
                state.segments = old;
                return Err(e);
            }
        };
        state.segments.insert(start, fresh);
        state.log_start_offset = start;
        state.log_end_offset = start;
        state.unflushed_records = 0;
        deleted?;
        checkpoint::sync_dir(&self.dir)?;
        state.dir_dirty = false;
        checkpoint::write(&self.dir.join(RECOVERY_POINT_FILE), start)?;
        state.recovery_point = start;
        if state.epochs.clear() {
            state.epochs.persist()?;
        }
        checkpoint::write(&self.dir.join(CLEANER_CHECKPOINT_FILE), start)?;
        checkpoint::write(&self.dir.join(TOMBSTONE_EXPIRY_FILE), -1)?;
        state.cleaned_up_to = start;
        state.tombstone_expiry = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
