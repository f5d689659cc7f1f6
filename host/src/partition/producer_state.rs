//! Idempotent producer state of one partition: for every producer id, its epoch and the
//! sequence ranges and offsets of its last five batches.
//!
//! This is what makes a retried batch harmless: a batch whose sequence range matches one
//! of the last five is a duplicate and is answered with the offsets it got the first
//! time, without appending; a batch that skips sequences is refused with
//! OUT_OF_ORDER_SEQUENCE_NUMBER, and one from an older epoch with INVALID_PRODUCER_EPOCH.
//! Five is the most batches a Kafka producer keeps in flight per partition.
//!
//! The state is derived from the log: it is rebuilt by replaying batch headers, starting
//! from a snapshot (written at clean shutdown and whenever the log rolls a segment) so
//! that recovery replays only the tail. Everything here is pure; the partition does I/O.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::log::batch::BatchHeader;

/// Batches remembered per producer, as Kafka does (max.in.flight.requests ≤ 5).
pub const BATCHES_PER_PRODUCER: usize = 5;

/// Why a batch's producer metadata is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    /// The batch comes from an epoch older than the producer's current one.
    #[error("producer {producer_id} epoch {epoch} is older than the current epoch {current}")]
    InvalidEpoch {
        /// The producer id.
        producer_id: i64,
        /// The batch's epoch.
        epoch: i16,
        /// The epoch on record.
        current: i16,
    },
    /// The batch does not continue the producer's sequence.
    #[error("producer {producer_id} epoch {epoch}: expected sequence {expected}, got {got}")]
    OutOfOrder {
        /// The producer id.
        producer_id: i64,
        /// The batch's epoch.
        epoch: i16,
        /// The next sequence on record.
        expected: i32,
        /// The batch's first sequence.
        got: i32,
    },
}

/// Where one batch of a producer landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRecord {
    /// First sequence number in the batch.
    pub first_seq: i32,
    /// Last sequence number in the batch.
    pub last_seq: i32,
    /// Offset of the batch's first record.
    pub base_offset: i64,
    /// Offset of the batch's last record.
    pub last_offset: i64,
}

/// One producer's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerEntry {
    /// Current epoch.
    pub epoch: i16,
    /// The last batches, oldest first.
    pub batches: VecDeque<BatchRecord>,
    /// Largest batch timestamp seen, for expiry.
    pub last_timestamp: i64,
}

/// What to do with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Append it.
    Append,
    /// It was appended before: answer with these offsets and append nothing.
    Duplicate(BatchRecord),
}

/// The idempotent producer state of a partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
}

/// Sequence numbers wrap from i32::MAX to 0.
fn seq_add(seq: i32, delta: i32) -> i32 {
    ((seq as i64 + delta as i64) % (i32::MAX as i64 + 1)) as i32
}

impl ProducerStates {
    /// Number of producers tracked.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Whether no producer is tracked.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Every producer's state.
    pub fn iter(&self) -> impl Iterator<Item = (&i64, &ProducerEntry)> {
        self.producers.iter()
    }

    /// One producer's state.
    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Copies one producer's state from `other` unless this state already has it; used
    /// to judge a request's batches without cloning every producer.
    pub fn adopt(&mut self, producer_id: i64, other: &ProducerStates) {
        if let (std::collections::hash_map::Entry::Vacant(slot), Some(entry)) = (
            self.producers.entry(producer_id),
            other.producers.get(&producer_id),
        ) {
            slot.insert(entry.clone());
        }
    }

    /// Decides whether a batch from an idempotent producer may be appended.
    /// Batches without a producer id (-1) or sequence (-1) are always appended.
    pub fn check(&self, header: &BatchHeader) -> Result<Verdict, SequenceError> {
        if header.producer_id < 0 || header.base_sequence < 0 {
            return Ok(Verdict::Append);
        }
        let Some(entry) = self.producers.get(&header.producer_id) else {
            // No state: a new producer, or one whose state expired or was deleted with
            // old segments. Accepting is what lets such producers continue.
            return Ok(Verdict::Append);
        };
        let first = header.base_sequence;
        let last = seq_add(first, header.last_offset_delta);
        if header.producer_epoch < entry.epoch {
            return Err(SequenceError::InvalidEpoch {
                producer_id: header.producer_id,
                epoch: header.producer_epoch,
                current: entry.epoch,
            });
        }
        if header.producer_epoch > entry.epoch {
            // A bumped epoch restarts the sequence.
            if first != 0 {
                return Err(SequenceError::OutOfOrder {
                    producer_id: header.producer_id,
                    epoch: header.producer_epoch,
                    expected: 0,
                    got: first,
                });
            }
            return Ok(Verdict::Append);
        }
        if let Some(dup) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == first && b.last_seq == last)
        {
            return Ok(Verdict::Duplicate(*dup));
        }
        let expected = entry
            .batches
            .back()
            .map(|b| seq_add(b.last_seq, 1))
            .unwrap_or(0);
        if first != expected {
            return Err(SequenceError::OutOfOrder {
                producer_id: header.producer_id,
                epoch: header.producer_epoch,
                expected,
                got: first,
            });
        }
        Ok(Verdict::Append)
    }

    /// Records an appended batch; `header` carries its final base offset.
    pub fn record(&mut self, header: &BatchHeader) {
        if header.producer_id < 0 {
            return;
        }
        let entry = self
            .producers
            .entry(header.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: header.producer_epoch,
                batches: VecDeque::new(),
                last_timestamp: -1,
            });
        if header.producer_epoch != entry.epoch {
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
        }
        entry.last_timestamp = entry.last_timestamp.max(header.max_timestamp);
        if header.base_sequence < 0 {
            return;
        }
        if entry.batches.len() == BATCHES_PER_PRODUCER {
            entry.batches.pop_front();
        }
        entry.batches.push_back(BatchRecord {
            first_seq: header.base_sequence,
            last_seq: seq_add(header.base_sequence, header.last_offset_delta),
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
        });
    }

    /// Forgets producers whose last batch is older than `now_ms - max_age_ms`, as Kafka's
    /// `producer.id.expiration.ms` does.
    pub fn expire(&mut self, now_ms: i64, max_age_ms: i64) {
        self.producers
            .retain(|_, e| e.last_timestamp < 0 || e.last_timestamp >= now_ms - max_age_ms);
    }
}

/// A snapshot: the state as of every batch below `offset`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Snapshot {
    /// Format version.
    pub version: u32,
    /// The state covers every batch below this offset.
    pub offset: i64,
    /// The state.
    pub producers: ProducerStates,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, count: i32, base_offset: i64) -> BatchHeader {
        BatchHeader {
            base_offset,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: 1000,
            max_timestamp: 1000,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records_count: count,
        }
    }

    #[test]
    fn in_sequence_batches_append_and_retries_are_duplicates() {
        let mut s = ProducerStates::default();
        let a = header(7, 0, 0, 3, 10);
        assert_eq!(s.check(&a), Ok(Verdict::Append));
        s.record(&a);
        let b = header(7, 0, 3, 2, 13);
        assert_eq!(s.check(&b), Ok(Verdict::Append));
        s.record(&b);
        // The retry of `a` gets its original offsets.
        match s.check(&header(7, 0, 0, 3, -1)) {
            Ok(Verdict::Duplicate(r)) => assert_eq!((r.base_offset, r.last_offset), (10, 12)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn gaps_and_stale_epochs_are_refused() {
        let mut s = ProducerStates::default();
        s.record(&header(7, 2, 0, 3, 0));
        assert_eq!(
            s.check(&header(7, 2, 5, 1, -1)),
            Err(SequenceError::OutOfOrder {
                producer_id: 7,
                epoch: 2,
                expected: 3,
                got: 5
            })
        );
        assert_eq!(
            s.check(&header(7, 1, 3, 1, -1)),
            Err(SequenceError::InvalidEpoch {
                producer_id: 7,
                epoch: 1,
                current: 2
            })
        );
        // A new epoch must start at 0.
        assert!(s.check(&header(7, 3, 4, 1, -1)).is_err());
        assert_eq!(s.check(&header(7, 3, 0, 1, -1)), Ok(Verdict::Append));
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut s = ProducerStates::default();
        for i in 0..7 {
            s.record(&header(1, 0, i, 1, i as i64));
        }
        assert_eq!(s.get(1).unwrap().batches.len(), BATCHES_PER_PRODUCER);
        assert!(matches!(
            s.check(&header(1, 0, 6, 1, -1)),
            Ok(Verdict::Duplicate(_))
        ));
        // Sequence 0 is no longer remembered and is not the next one either.
        assert!(s.check(&header(1, 0, 0, 1, -1)).is_err());
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        let mut s = ProducerStates::default();
        s.record(&header(1, 0, i32::MAX - 1, 2, 0));
        assert_eq!(s.check(&header(1, 0, 0, 1, -1)), Ok(Verdict::Append));
    }

    #[test]
    fn non_idempotent_batches_are_not_tracked() {
        let mut s = ProducerStates::default();
        let h = header(-1, -1, -1, 5, 0);
        assert_eq!(s.check(&h), Ok(Verdict::Append));
        s.record(&h);
        assert!(s.is_empty());
    }

    #[test]
    fn old_producers_expire() {
        let mut s = ProducerStates::default();
        s.record(&header(1, 0, 0, 1, 0));
        s.expire(1000 + 10, 100);
        assert_eq!(s.len(), 1);
        s.expire(1000 + 101, 100);
        assert!(s.is_empty());
    }
}
